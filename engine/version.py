"""The installed ganomaly-edge version, for --version and reports."""

from __future__ import annotations


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ganomaly-edge")
    except PackageNotFoundError:
        return "0+unknown (not installed)"
