"""``ganomaly-train --help`` and ``--version`` (and ``ganomaly-eval``'s, and
``ganomaly-build-engine``'s) work on a device without the train extra: a real virtual environment
that holds only the core dependencies, where ``import torch`` fails."""

import importlib
import importlib.metadata
import os
import subprocess
import sys
import venv

import pytest

# The core dependencies (pyproject's [project] dependencies) and what they import.
CORE = ("numpy", "paho", "pydantic", "pydantic_core", "pydantic_settings", "typing_extensions",
        "annotated_types", "typing_inspection", "dotenv", "cryptography", "cffi", "_cffi_backend", "tomli")
PACKAGES = ("agent", "engine", "train", "tools")


def _location(name):
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return None
    return os.path.dirname(mod.__file__) if mod.__file__.endswith("__init__.py") else mod.__file__


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory):
    """A venv (no pip, no system site-packages) whose site-packages links only the core
    dependencies and this checkout's ganomaly_edge packages, with its installed metadata."""
    root = tmp_path_factory.mktemp("core-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(root)
    py = str(root / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for name in CORE:
        loc = _location(name)
        if loc is not None:
            os.symlink(loc, os.path.join(site, os.path.basename(loc)))
    os.makedirs(os.path.join(site, "ganomaly_edge"))
    for pkg in PACKAGES:
        src = os.path.dirname(importlib.import_module(f"ganomaly_edge.{pkg}").__file__)
        os.symlink(src, os.path.join(site, "ganomaly_edge", pkg))
    dist = importlib.metadata.distribution("ganomaly-edge")
    meta = str(dist.locate_file(dist._path.name)) if hasattr(dist, "_path") else None
    if meta and os.path.isdir(meta):
        os.symlink(meta, os.path.join(site, os.path.basename(meta)))
    r = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr, "the venv must not see torch"
    return py


def _run(py, entry, *args):
    code = f"import sys; from {entry.rsplit(':', 1)[0]} import {entry.rsplit(':', 1)[1]} as m; sys.exit(m())"
    return subprocess.run([py, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry,prog", [("ganomaly_edge.train.cli:train_main", "ganomaly-train"),
                                        ("ganomaly_edge.train.cli:eval_main", "ganomaly-eval"),
                                        ("ganomaly_edge.train.build_engine:main", "ganomaly-build-engine")])
def test_help_and_version_exit_0_without_torch(core_venv, entry, prog):
    r = _run(core_venv, entry, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {prog}") and "Traceback" not in r.stderr
    v = _run(core_venv, entry, "--version")
    assert v.returncode == 0 and v.stdout.startswith(f"{prog} ") and "unknown" not in v.stdout, v.stdout + v.stderr


def test_training_without_torch_says_what_to_install(core_venv, tmp_path):
    r = _run(core_venv, "ganomaly_edge.train.cli:train_main", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "torch" in r.stderr and "ganomaly-edge[train]" in r.stderr


def test_usage_line_names_the_score_once(core_venv):
    """The 20 score names are listed in --score's help, not a second time in the usage line."""
    from ganomaly_edge.train.choices import CANDIDATES

    r = _run(core_venv, "ganomaly_edge.train.cli:train_main", "--help")
    usage, rest = r.stdout.split("\n\n", 1)
    assert "[--score SCORE]" in usage and not any(name in usage for name in CANDIDATES if "+" in name)
    assert rest.count("knn+fknn+peak") <= 2  # the list and the default
