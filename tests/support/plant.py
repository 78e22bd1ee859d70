"""What the plant-side tests (test_items.py, test_gpio.py, test_genicam.py, test_16bit.py) share
beyond support.agent (the one config writer, launcher and Subscriber): their config's settings, a
wait, a line's video and the result schema check."""

import json
import os

from .agent import Subscriber, start_agent, stop, wait, write_config  # noqa: F401  (the shared helpers)
from .data import ROOT, digits_u8

PREFIX = "ganomaly/plant"
RESULT_SCHEMA = json.load(open(os.path.join(ROOT, "agent", "result.schema.json")))


def plant(**overrides):
    """support.agent.write_config's keywords for a plant config: camera "cam1", INFO logs, one worker,
    stats every second, no [cameras.decision] nor [cameras.items] unless given (``camera_tables``)."""
    return {"camera": "cam1", "device_id": "plant", "log_level": "INFO", "model_extra": "workers = 1",
            "prefix": PREFIX, "stats_interval_s": 1.0, "retry_s": (0.5, 1.0), "decision": None,
            "results": None, **overrides}


def subscriber(port, **kw):
    """A support.agent.Subscriber on the plant prefix."""
    return Subscriber(port, prefix=PREFIX, **kw)


def check_results(results):
    import jsonschema

    for r in results:
        jsonschema.validate(r, RESULT_SCHEMA)


def line_video(path, n=20):
    """A 20 fps MJPG video of ``n`` unseen digits (48x48): a camera for triggered items (loop it)."""
    import cv2

    x, _ = digits_u8(16)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (48, 48))
    for i in range(n):
        w.write(cv2.cvtColor(cv2.resize(x[1200 + i, :, :, 0], (48, 48)), cv2.COLOR_GRAY2BGR))
    w.release()
    return str(path)
