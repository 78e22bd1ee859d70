"""Hot swap: a camera's model bundle replaced while the agent runs.

The new bundle loads and passes its self-test beside the running one; it is checked against
each camera (channel count, working resolution); only then does each camera's inference switch,
between two batches (inference.py). Any failure leaves every camera on its model, and the
reason is logged, counted and returned. The model each camera ran before is kept loaded, so a
rollback is one command and needs no file.

Triggers: ``<prefix>/model/set`` over MQTT (mqtt.py), SIGHUP (cli.py: the config's bundle paths
read again), and ``ModelSwitch.set`` for the HTTP console. Each result is published on
``<prefix>/model/result``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from ganomaly_edge.engine import Engine

log = logging.getLogger(__name__)


def parse_request(payload: bytes | str | dict) -> dict[str, Any]:
    """{"bundle": PATH, "camera": NAME?} or {"rollback": true, "camera": NAME?} as keyword
    arguments of ModelSwitch.set; ValueError naming what is wrong."""
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"the request is not JSON ({e}): send {USAGE}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"the request must be a JSON object: send {USAGE}")
    unknown = sorted(set(payload) - {"bundle", "camera", "rollback"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}: send {USAGE}")
    bundle, camera, rollback = payload.get("bundle"), payload.get("camera"), payload.get("rollback", False)
    if rollback is not True and rollback is not False:
        raise ValueError('"rollback" must be true or false')
    if camera is not None and not isinstance(camera, str):
        raise ValueError('"camera" must be a camera name (a string)')
    if rollback == (bundle is not None):
        raise ValueError(f"give either a bundle or rollback: send {USAGE}")
    if bundle is not None and (not isinstance(bundle, str) or not bundle):
        raise ValueError('"bundle" must be the path of a bundle folder or archive on the device')
    return {"bundle": bundle, "camera": camera, "rollback": rollback}


USAGE = '{"bundle": "/path/to/bundle", "camera": "NAME"} (camera optional: every camera) or {"rollback": true}'


class ModelSwitch:
    def __init__(self, pipelines: list, load: Callable[[str], Engine], paths: dict[str, str],
                 on_result: Callable[[dict[str, Any]], None] | None = None):
        """``paths``: camera -> the bundle path it runs; ``load(path)`` loads and self-tests one."""
        self.pipelines = {p.cam.name: p for p in pipelines}
        self.load = load
        self.paths = dict(paths)
        self.previous: dict[str, tuple[Engine, str]] = {}  # camera -> (engine, path) it ran before
        self.retired: list[Engine] = []  # closed at shutdown: a worker may still be scoring with one
        self.on_result = on_result or (lambda r: None)
        self.lock = threading.Lock()  # one swap at a time
        self.counts = {"ok": 0, "failed": 0, "unchanged": 0}
        self.last: dict[str, Any] | None = None

    def set(self, bundle: str | None = None, camera: str | None = None, rollback: bool = False,
            source: str = "api") -> dict[str, Any]:
        """Switch ``camera`` (every camera when None) to ``bundle``, or back to the model it ran
        before (``rollback``). Returns {"ok", "cameras", "hash", "reason", ...}; never raises."""
        t0 = time.monotonic()
        with self.lock:
            try:
                result = self._rollback(camera) if rollback else self._set(bundle, camera)
            except Exception as e:  # a bundle that does not load or fails its self-test, a bad request
                result = {"ok": False, "reason": str(e) or type(e).__name__}
            result.update({"request": {"bundle": bundle, "camera": camera, "rollback": rollback}, "source": source,
                           "ts": round(time.time(), 3), "seconds": round(time.monotonic() - t0, 3)})
            self._record(result)
        return result

    def _targets(self, camera: str | None) -> list:
        if camera is None:
            return list(self.pipelines.values())
        if camera not in self.pipelines:
            raise ValueError(f"no camera {camera!r}: the cameras are {', '.join(sorted(self.pipelines))}")
        return [self.pipelines[camera]]

    def _set(self, bundle: str | None, camera: str | None) -> dict[str, Any]:
        if not bundle or not isinstance(bundle, str):
            raise ValueError('no bundle given: send {"bundle": "/path/to/bundle"} (and "camera" for one camera), '
                             'or {"rollback": true}')
        targets = self._targets(camera)
        engine = self.load(bundle)  # raises with the reason; the running models are untouched
        try:
            for p in targets:  # every camera must take it before any switches
                p.swap_check(engine)
        except Exception:
            engine.close()
            raise
        changing = [p for p in targets if p.engine.bundle.model_hash != engine.bundle.model_hash]
        if not changing:
            engine.close()
            return {"ok": True, "unchanged": True, "cameras": [p.cam.name for p in targets],
                    "hash": engine.bundle.model_hash, "reason": "the cameras already run this model"}
        return self._switch(changing, engine, bundle)

    def _switch(self, targets: list, engine: Engine, path: str) -> dict[str, Any]:
        before = {}
        for p in targets:
            old = p.swap(engine)
            before[p.cam.name] = old.bundle.model_hash
            dropped = self.previous.get(p.cam.name)
            if dropped is not None:
                self.retired.append(dropped[0])
            self.previous[p.cam.name] = (old, self.paths.get(p.cam.name, old.bundle.path))
            self.paths[p.cam.name] = path
            log.warning("camera %s: model %s (%s) now scores, replacing %s (%s); the old model is kept for "
                        "rollback", p.cam.name, engine.bundle.name, engine.bundle.model_hash, old.bundle.name,
                        old.bundle.model_hash)
        return {"ok": True, "cameras": [p.cam.name for p in targets], "bundle": path, "name": engine.bundle.name,
                "hash": engine.bundle.model_hash, "previous": before}

    def _rollback(self, camera: str | None) -> dict[str, Any]:
        targets = [p for p in self._targets(camera) if camera is not None or p.cam.name in self.previous]
        missing = [p.cam.name for p in targets if p.cam.name not in self.previous]
        if not targets or missing:
            raise ValueError(f"nothing to roll back to: camera(s) {', '.join(missing) or 'all'} have run one "
                             "model since the agent started")
        done: dict[str, Any] = {}
        for p in targets:
            engine, path = self.previous[p.cam.name]
            p.swap_check(engine)
        for p in targets:
            engine, path = self.previous.pop(p.cam.name)
            r = self._switch([p], engine, path)
            done[p.cam.name] = r["hash"]
        return {"ok": True, "rollback": True, "cameras": list(done), "hash": next(iter(done.values())),
                "hashes": done}

    def request(self, payload: bytes | str | dict, source: str) -> dict[str, Any]:
        """A swap asked for in JSON (MQTT, HTTP): parsed, done, answered; a bad request is refused
        like a bad bundle (logged, counted, returned)."""
        try:
            kwargs = parse_request(payload)
        except ValueError as e:
            result = {"ok": False, "reason": f"bad request: {e}", "source": source, "ts": round(time.time(), 3)}
            with self.lock:
                self._record(result)
            return result
        return self.set(**kwargs, source=source)

    def _record(self, result: dict[str, Any]) -> None:
        key = "unchanged" if result.get("unchanged") else ("ok" if result["ok"] else "failed")
        self.counts[key] += 1
        self.last = result
        if not result["ok"]:
            log.error("model swap refused (%s), every camera keeps its model: %s", result["source"], result["reason"])
        try:
            self.on_result(result)
        except Exception:  # publishing the result must not undo the swap
            log.exception("could not publish the model swap result")

    def reload(self, paths: dict[str, str]) -> list[dict[str, Any]]:
        """SIGHUP: each camera to the bundle its configuration now names (camera -> path); a
        camera whose model is the same stays as it is. Cameras not running (added to the file
        since) need a restart."""
        return [self.set(path, cam, source="SIGHUP") for cam, path in paths.items() if cam in self.pipelines]

    def state(self) -> dict[str, Any]:
        cams = {name: {"model": p.engine.bundle.name, "hash": p.engine.bundle.model_hash,
                       "bundle": self.paths.get(name),
                       "previous": self.previous[name][0].bundle.model_hash if name in self.previous else None}
                for name, p in self.pipelines.items()}
        return {"cameras": cams, "swaps": dict(self.counts), "last": self.last}

    def engines(self) -> list[Engine]:
        return [e for e, _ in self.previous.values()] + self.retired
