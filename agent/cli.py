"""``ganomaly-agent --config FILE``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import NoReturn

from ganomaly_edge.engine.version import version

# Exit statuses, as deploy/ganomaly-edge.service treats them.
EXIT_CONFIG = 2  # a configuration error: RestartPreventExitStatus=2, so systemd does not retry it
EXIT_GPU = 75  # EX_TEMPFAIL: the GPU or its driver failed at start; systemd restarts the agent
GPU_BACKOFF_S = (5.0, 300.0)  # the first wait before that exit, and the longest (doubling in between)


NO_CONFIG = """error: no configuration: ganomaly-agent needs --config FILE (a TOML file), e.g.

    ganomaly-agent --config agent.toml --check-config    # check it, load and self-test the bundle
    ganomaly-agent --config agent.toml                   # run

A minimal agent.toml is in README.md (Quick start); config.example.toml has every key with its
description, and docs/configuration.md is the reference. Every key can also come from the
environment (GANOMALY_MQTT__HOST=..., GANOMALY_CAMERAS='[...]')."""


def print_to_pipe(text: str) -> int:
    """Print to stdout; a reader that went away early (``--print-config | head``) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:  # ganomaly-agent export ...: reviewed alarms' frames as training images
        os.umask(0o077)
        from .export import main as export_main

        return export_main(argv[1:])
    ap = argparse.ArgumentParser(prog="ganomaly-agent", description="Run the edge inspection agent. "
                                 "'ganomaly-agent export --help': reviewed alarms' frames as training images.")
    ap.add_argument("--config", "-c", help="TOML config file (every key can be overridden by GANOMALY_* "
                                           "environment variables, e.g. GANOMALY_MQTT__HOST)")
    ap.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    ap.add_argument("--print-config", action="store_true", help="print the effective configuration as JSON")
    ap.add_argument("--flush-timeout", type=float, default=10.0,
                    help="seconds to wait for the broker's acknowledgements when stopping")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = ap.parse_args(argv)
    # Everything the agent writes (event store, crops, anything later) is its own: 0600 files and
    # 0700 folders whatever umask it was started with (by hand, umask 022 makes them world-readable).
    os.umask(0o077)
    try:
        import cv2  # noqa: F401
    except ImportError:
        print("error: OpenCV is not installed: pip install 'ganomaly-edge[cpu]' (on a Jetson, use JetPack's "
              "OpenCV from a venv made with --system-site-packages: deploy/install.sh does)", file=sys.stderr)
        return 2

    from .redact import redact

    settings = _settings_or_say_why(args.config)
    if settings is None:
        return EXIT_CONFIG
    setup_logging(settings.log_level)
    if args.print_config:  # passwords print as **********, credentials in URIs as ***
        return print_to_pipe(redact(json.dumps(settings.model_dump(mode="json"), indent=2)))
    if args.check_config:
        return check_config(settings)

    from ganomaly_edge.engine import BundleError, GpuUnavailable

    from .service import Agent

    retries = _gpu_retry_file(settings)
    try:
        agent = Agent(settings)
    except GpuUnavailable as e:
        return _gpu_failed(str(e), retries)
    except (BundleError, RuntimeError, ValueError) as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return EXIT_CONFIG
    if os.path.exists(retries):
        os.remove(retries)

    _install_signals(agent, args.config)
    agent.run(flush_timeout=args.flush_timeout)
    _exit_after_stop(0)


def _install_signals(agent, config: str | None) -> None:
    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        logging.getLogger("ganomaly").info("signal %s: stopping", name)
        agent.stop(f"stopped by {name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # SIGHUP (systemctl reload): the bundle paths of the config read again, each camera hot-swapped
    signal.signal(signal.SIGHUP, lambda signum, frame: agent.reload_config(config))


def _settings_or_say_why(path: str | None):
    """The validated settings, or None once what is wrong has been said on stderr."""
    from .config import ConfigError, load_settings
    from .redact import redact

    if path is None and not any(k.upper().startswith("GANOMALY_") for k in os.environ):
        print(NO_CONFIG, file=sys.stderr)
        return None
    try:
        return load_settings(path)
    except ConfigError as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return None


def _gpu_retry_file(settings) -> str:
    """Where consecutive GPU failures at start are counted: beside the event store, in the
    service's state directory, so the count survives the restarts it paces."""
    return os.path.join(os.path.dirname(os.path.abspath(settings.store.path)), "gpu-start-failures")


def _gpu_failed(reason: str, retries: str) -> int:
    """The GPU or its driver failed at start (``backend = "tensorrt"``): wait, doubling the wait
    with each failure in a row, then exit EXIT_GPU, which systemd restarts. Without the wait a
    driver that needs minutes after boot would use up the unit's start limit in seconds."""
    import time

    from . import systemd

    try:
        with open(retries) as f:
            n = int(f.read().strip() or 0)
    except (OSError, ValueError):
        n = 0
    first, longest = GPU_BACKOFF_S
    delay = min(first * 2 ** n, longest)
    log = logging.getLogger("ganomaly")
    try:
        with open(retries, "w") as f:
            f.write(f"{n + 1}\n")
    except OSError as e:
        log.warning("cannot count GPU failures in %s: %s", retries, e)
    log.error("GPU unavailable at start (failure %d in a row): %s. Exiting with status %d after %.0f s; "
              "systemd restarts the agent. Set model.backend = \"auto\" to run on the CPU meanwhile",
              n + 1, reason, EXIT_GPU, delay)
    # The wait happens before READY=1, inside the unit's start timeout: extend it.
    systemd.notify(f"EXTEND_TIMEOUT_USEC={int((delay + 30) * 1e6)}\nSTATUS=GPU unavailable, retrying: {reason}")
    time.sleep(delay)
    return EXIT_GPU


def _exit_after_stop(code: int) -> NoReturn:
    """End the process once the agent has stopped (events flushed or kept in the store, the
    store closed, MQTT disconnected), without the interpreter's finalisation. A reader thread
    abandoned inside a hung OpenCV or GStreamer call (capture.py) is still in C++ then, and
    finalisation ends such threads with pthread_exit, which C++ code that catches everything
    turns into "FATAL: exception not rethrown" and SIGABRT: a clean stop would exit -6, and
    systemd would record a failure. Logs and standard streams are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class JournalFormatter(logging.Formatter):
    """Under systemd (stderr connected to the journal), each line starts with its syslog priority,
    <3> error ... <7> debug, which journald reads: journalctl -p warning then shows the warnings."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def setup_logging(level: str) -> None:
    import os

    from .redact import RedactingFormatter

    handler = logging.StreamHandler()
    if os.environ.get("JOURNAL_STREAM"):  # the journal stamps the time itself
        fmt: logging.Formatter = JournalFormatter("%(levelname)s %(name)s: %(message)s")
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(fmt))  # credentials in URIs never reach the journal
    logging.basicConfig(level=level, handlers=[handler])


def check_config(settings) -> int:
    """Everything the agent will need, opened once: bundles (loaded on the configured backend, their
    signatures checked against model.trusted_keys, and the self-test against their reference outputs
    run, as at start), GPIO trigger lines, password file, event store, prefix."""
    from ganomaly_edge.engine import BundleError, SelfTestError, load

    from .config import check_topic_prefix
    from .redact import redact
    from .store import EventStore

    problems = [f"camera {c.name}: the folder {c.source.uri!r} does not exist (or is not a folder): create it, "
                "mount it, or fix cameras.source.uri" for c in settings.cameras
                if c.source.kind == "folder" and not os.path.isdir(c.source.uri)]
    m = settings.model
    tested: dict[str, str | None] = {}
    for cam in settings.cameras:
        path = cam.bundle or m.bundle
        if path not in tested:
            tested[path] = None
            try:
                engine = load(path, m.backend, threads=1, allow_mismatch=m.allow_mismatch, spinning=False,
                              trusted_keys=m.trusted_keys, openvino_precision=m.openvino_precision)
                engine.close()
                for w in engine.bundle.training_warnings:
                    print(f"warning: bundle {path}: THIS MODEL IS NOT READY: {w}", file=sys.stderr)
            except (BundleError, SelfTestError, RuntimeError, ValueError, OSError) as e:
                tested[path] = str(e)
        if tested[path]:
            problems.append(f"camera {cam.name}: {tested[path]}")
    problems += _trigger_lines(settings)
    try:
        settings.mqtt.resolved_password()
    except ValueError as e:
        problems.append(str(e))
    try:
        check_topic_prefix(settings.prefix)
    except ValueError as e:
        problems.append(f"mqtt.prefix: {e}")
    try:
        EventStore(settings.store.path).close()
    except RuntimeError as e:
        problems.append(str(e))
    for p in problems:
        print(f"error: {redact(p)}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print(redact(f"configuration OK: {len(settings.cameras)} camera(s), {len(tested)} bundle(s) loaded and "
                 f"self-tested, prefix {settings.prefix}, store {settings.store.path}"))
    return 0


def _trigger_lines(settings) -> list[str]:
    """Each GPIO trigger line opened and released once: the extra, the chip, the line, who holds it."""
    cams = [c for c in settings.cameras if c.items.trigger == "gpio"]
    if not cams:
        return []
    from .gpio import check

    return [p for p in (check(c) for c in cams) if p]


if __name__ == "__main__":
    sys.exit(main())
