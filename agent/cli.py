"""``ganomaly-agent --config FILE``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from ganomaly_edge.engine.version import version


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ganomaly-agent", description="Run the edge inspection agent.")
    ap.add_argument("--config", "-c", help="TOML config file (every key can be overridden by GANOMALY_* "
                                           "environment variables, e.g. GANOMALY_MQTT__HOST)")
    ap.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    ap.add_argument("--print-config", action="store_true", help="print the effective configuration as JSON")
    ap.add_argument("--flush-timeout", type=float, default=10.0,
                    help="seconds to wait for the broker's acknowledgements when stopping")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = ap.parse_args(argv)
    try:
        import cv2  # noqa: F401
    except ImportError:
        print("error: OpenCV is not installed: pip install 'ganomaly-edge[cpu]' (on a Jetson, use JetPack's "
              "OpenCV from a venv made with --system-site-packages: deploy/install.sh does)", file=sys.stderr)
        return 2

    from .config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.print_config:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    if args.check_config:
        from ganomaly_edge.engine import BundleError, open_bundle

        for cam in settings.cameras:
            path = cam.bundle or settings.model.bundle
            try:
                open_bundle(path)
            except BundleError as e:
                print(f"error: camera {cam.name}: {e}", file=sys.stderr)
                return 2
        print(f"configuration OK: {len(settings.cameras)} camera(s), prefix {settings.prefix}")
        return 0

    from ganomaly_edge.engine import BundleError

    from .service import Agent

    try:
        agent = Agent(settings)
    except (BundleError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        logging.getLogger("ganomaly").info("signal %s: stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run(flush_timeout=args.flush_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
