"""``ganomaly-agent export --config FILE --verdict false_alarm [--camera NAME] [--since T] --out DIR``.

The frames of reviewed alarms, out of the alarm history (history.py), as images the trainer and
``ganomaly-calibrate`` read: the ROI the model saw (rotation applied), resized to the working
resolution of the camera's model the way capture resizes, in the bit depth and channels the
camera gave. ``manifest.json`` beside them lists each image's alarm (id, camera, time, score,
threshold, the model's name and hash, the verdict). False alarms are normal frames for
fine-tuning or recalibration; ``defect`` verdicts make a labelled abnormal set for ganomaly-eval.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from typing import Any

import cv2

from ganomaly_edge.engine.bundle import open_bundle
from ganomaly_edge.engine.preprocess import resize_to

from .errors import AgentError
from .history import VERDICTS, History

MANIFEST = "manifest.json"


class ExportError(AgentError, ValueError):
    """Nothing to export, or input the export cannot use; the message says what to do."""


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """Seconds since the epoch from '1765080000', an ISO time ('2026-12-07T06:00', local when no
    zone) or an age ('8h', '2d', '30m')."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return (time.time() if now is None else now) - float(m.group(1)) * unit
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ExportError(f"--since {text!r}: give an age (8h, 2d), an ISO time (2026-12-07T06:00) or seconds "
                          "since the epoch") from None


def working_sizes(settings) -> dict[str, tuple[int, int]]:
    """Camera -> (height, width) its model works at: the camera's working_size, else its bundle's."""
    out: dict[str, tuple[int, int]] = {}
    for cam in settings.cameras:
        if cam.working_size is not None:
            out[cam.name] = (cam.working_size[1], cam.working_size[0])
        else:
            t = open_bundle(cam.bundle or settings.model.bundle).tiling
            out[cam.name] = (t.height, t.width)
    return out


def export(settings, verdict: str, out: str, camera: str | None = None, since: float | None = None,
           until: float | None = None, limit: int = 100_000) -> dict[str, Any]:
    """Write the images and the manifest; returns the manifest. ExportError when there is nothing."""
    if verdict not in VERDICTS:
        raise ExportError(f"--verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    folder = settings.history_path
    if not os.path.exists(os.path.join(folder, "history.db")):
        raise ExportError(f"no alarm history in {folder}: the agent keeps one when [history] enabled = true "
                          "(the default); run it, review alarms in the console, then export")
    if camera is not None and camera not in {c.name for c in settings.cameras}:
        raise ExportError(f"no camera {camera!r} in the configuration: the cameras are "
                          f"{', '.join(c.name for c in settings.cameras)}")
    h = History(folder, settings.history.max_days, settings.history.max_mb)
    try:
        alarms = h.list(camera=camera, since=since, until=until, verdict=verdict, limit=limit)
        if not alarms:
            raise ExportError(_nothing(verdict, camera, since))
        return _write(h, alarms, out, working_sizes(settings), verdict)
    finally:
        h.close()


def _nothing(verdict: str, camera: str | None, since: float | None) -> str:
    where = (f" for camera {camera}" if camera else "") + (
        f" since {datetime.fromtimestamp(since).isoformat(timespec='seconds')}" if since else "")
    return (f"0 alarms marked {verdict}{where} in the alarm history: nothing exported. Mark alarms in the "
            "console (or over MQTT <prefix>/<camera>/verdict/set), or widen --camera/--since")


def _write(h: History, alarms: list[dict], out: str, sizes: dict[str, tuple[int, int]], verdict: str) -> dict:
    os.makedirs(out, exist_ok=True)
    items, missing = [], []
    for a in reversed(alarms):  # oldest first
        path = h.image(a["id"], "frame")
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED) if path else None
        if img is None:
            missing.append(a["id"])
            continue
        size = sizes.get(a["camera"]) or img.shape[:2]
        name = f"{a['camera']}-{a['id']}.png"
        if not cv2.imwrite(os.path.join(out, name), resize_to(img, size)):
            raise ExportError(f"cannot write {os.path.join(out, name)} (disk full or no permission?)")
        items.append({"file": name, "id": a["id"], "camera": a["camera"], "ts": a["ts"], "score": a["score"],
                      "threshold": a["threshold"], "item": a["item"], "frame_index": a["frame_index"],
                      "verdict": a["verdict"], "verdict_source": a["verdict_source"], "model": a["model"]})
    if not items:
        raise ExportError(f"the {len(alarms)} alarm(s) marked {verdict} have no frame in the history (kept with "
                          "[history] frame_format since the console came; older ones have none): nothing exported")
    manifest = {"verdict": verdict, "exported": time.time(), "history": h.folder, "count": len(items),
                "without_frame": missing, "models": sorted({i["model"]["hash"] for i in items}), "images": items}
    with open(os.path.join(out, MANIFEST + ".tmp"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(os.path.join(out, MANIFEST + ".tmp"), os.path.join(out, MANIFEST))
    return manifest


def main(argv: list[str]) -> int:
    import argparse
    import sys

    from .config import ConfigError, load_settings

    ap = argparse.ArgumentParser(prog="ganomaly-agent export",
                                 description="Write the frames of reviewed alarms as training images, with a manifest.")
    ap.add_argument("--config", "-c", required=True, help="the agent's TOML config (its history and cameras)")
    ap.add_argument("--verdict", required=True, choices=VERDICTS, help="false_alarm: normal frames for "
                    "fine-tuning or ganomaly-calibrate; defect: a labelled abnormal set for ganomaly-eval")
    ap.add_argument("--camera", help="only this camera's alarms")
    ap.add_argument("--since", help="only alarms since: an age (8h, 2d), an ISO time or epoch seconds")
    ap.add_argument("--until", help="only alarms until (same forms)")
    ap.add_argument("--out", required=True, help="folder to write the images and manifest.json into")
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.config)
        m = export(settings, args.verdict, args.out, args.camera, parse_since(args.since), parse_since(args.until))
    except (ConfigError, ExportError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {m['count']} frame(s) of alarms marked {args.verdict} to {args.out} (manifest.json: ids, "
          f"scores, models {', '.join(m['models'])})" + (f"; {len(m['without_frame'])} without a frame in the "
                                                          "history were left out" if m["without_frame"] else ""))
    return 0
