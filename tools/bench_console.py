"""``ganomaly-bench agent ... --console``: what the console costs inspection, and how fast its page is.

1. Agent fps (and CPU seconds per 1,000 frames) with the console off and on, with a client
   polling it the whole run as an open review page does (``--console-poll browser``; ``heavy``:
   the page, its status and /metrics every second), at each alarm rate (1 % and 10 % by default). Rounds interleave off and on runs
   (this host's speed drifts); the figure is the ratio of the medians.
2. The review page with 10,000 alarms in history: median time of GET / over HTTP, and the load
   time (navigation start to the load event) in headless chromium when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import numpy as np

TOKEN = "bench-console-token-0123456789abcdef"


def _get(url: str, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def poll(port: int, stop: threading.Event, counts: dict, heavy: bool = False) -> None:
    """A review page left open, as the page itself polls: /api/status every 2 s, the page (and
    its first 20 thumbnails) reloaded every 30 s, and Prometheus scraping /metrics every 15 s.
    ``heavy``: every second the page, /api/status and /metrics, and every fifth the thumbnails."""
    base, tick = f"http://127.0.0.1:{port}", 0
    # (page, status, metrics, thumbnails) due at second t
    every = (lambda t: (True, True, True, t % 5 == 0)) if heavy else (
        lambda t: (t % 30 == 1, t % 2 == 0, t % 15 == 0, t % 30 == 1))
    while not stop.wait(1.0):
        tick += 1
        page, status, metrics, thumbs = every(tick)
        try:
            html = _get(base + "/") if page or thumbs else b""
            if status:
                _get(base + "/api/status")
            if metrics:
                _get(base + "/metrics")
            counts["polls"] += 1
            for path in re.findall(rb'src="(/api/alarms/[0-9a-f]{32}/images/[a-z0-9-]+)"', html)[:20] if thumbs else []:
                _get(base + path.decode())
                counts["images"] += 1
        except OSError:
            counts["errors"] += 1  # before the agent listens, and after it ends


def agent_fps(bundle: str, video: str, work: str, threshold: float, console: bool, args) -> dict:
    from .bench import _agent_run
    from .broker import free_port

    extra, stop, counts, t = "", threading.Event(), {"polls": 0, "images": 0, "errors": 0}, None
    if console:
        port = free_port()
        with open(os.path.join(work, "token"), "w") as f:
            f.write(TOKEN)
        extra = f'[http]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{work}/token"\n'
        t = threading.Thread(target=poll, args=(port, stop, counts, args.console_poll == "heavy"), daemon=True)
        t.start()
    shutil.rmtree(os.path.join(work, "history"), ignore_errors=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        stats = _agent_run(bundle, video, work, args.threads, threshold, None, args.spinning, args.max_batch,
                           args.workers, extra=extra)
    finally:
        stop.set()
        if t is not None:
            t.join(15)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cam = stats["cameras"]["bench"]
    # CPU seconds of the agent (and the run's broker) per 1,000 frames: what the console costs,
    # steadier than fps on a host whose other load comes and goes.
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"fps": cam["frames_processed"] / cam["busy_s"], "alarms": cam["alarms"],
            "cpu_s_per_1000_frames": 1000 * cpu / max(cam["frames_processed"], 1), **counts}


def stream(bundle: str, frames: int, work: str) -> tuple[str, np.ndarray]:
    """A video of ``frames`` frames (the bench's moving texture) and the calibrated score of each."""
    import cv2

    from ganomaly_edge.engine import load

    eng = load(bundle, "auto")
    h, w, c = eng.spec.shape
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    video = os.path.join(work, "stream.avi")
    vw = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    for i in range(frames):
        vw.write(np.roll(base, 3 * i, axis=1))
    vw.release()
    cap, decoded = cv2.VideoCapture(video), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f if c == 3 else cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[..., None])
    x = np.stack(decoded)
    cal = np.concatenate([eng.calibrated(eng.infer(x[i:i + 8])[0]) for i in range(0, len(x), 8)])
    eng.close()
    return video, cal


def bench_fps(bundle: str, args) -> list[dict]:
    work = tempfile.mkdtemp(prefix="bench-console-")
    video, cal = stream(bundle, args.frames, work)
    out = []
    for rate in [float(r) for r in args.console_rates.split(",")]:
        threshold = float(np.quantile(cal, 1 - rate))
        off, on = [], []
        for r in range(args.rounds):
            off.append(agent_fps(bundle, video, work, threshold, False, args))
            on.append(agent_fps(bundle, video, work, threshold, True, args))
            print(json.dumps({"alarm_rate": rate, "round": r, "off_fps": round(off[-1]["fps"], 1),
                              "on_fps": round(on[-1]["fps"], 1), "on_polls": on[-1]["polls"],
                              "off_cpu_s_per_1000": round(off[-1]["cpu_s_per_1000_frames"], 2),
                              "on_cpu_s_per_1000": round(on[-1]["cpu_s_per_1000_frames"], 2)}), flush=True)
        med_off, med_on = float(np.median([o["fps"] for o in off])), float(np.median([o["fps"] for o in on]))
        out.append({"alarm_rate": rate, "alarms_per_run": off[0]["alarms"], "rounds": args.rounds,
                    "fps_console_off": round(med_off, 1), "fps_console_on": round(med_on, 1),
                    "on_over_off": round(med_on / med_off, 4),
                    "on_over_off_median_of_rounds": round(float(np.median([b["fps"] / a["fps"] for a, b in zip(off, on)])), 4),
                    "cpu_s_per_1000_frames_off": round(float(np.median([o["cpu_s_per_1000_frames"] for o in off])), 2),
                    "cpu_s_per_1000_frames_on": round(float(np.median([o["cpu_s_per_1000_frames"] for o in on])), 2),
                    "polls_per_run": [o["polls"] for o in on], "thumbnails_per_run": [o["images"] for o in on]})
    return out


def fill_history(folder: str, n: int, cameras: tuple[str, ...] = ("bench", "line2")) -> float:
    """``n`` alarms with real JPEG crops, overlay and a PNG frame; returns seconds taken."""
    import cv2

    from ganomaly_edge.agent.history import History

    h = History(folder, max_days=3650, max_mb=100000)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (64, 64, 3), np.uint8)
    crop = cv2.imencode(".jpg", img[:24, :24])[1].tobytes()
    over = cv2.imencode(".jpg", img)[1].tobytes()
    frame = cv2.imencode(".png", img)[1].tobytes()
    t0, now = time.perf_counter(), time.time()
    for i in range(n):
        eid, cam = uuid.uuid4().hex, cameras[i % len(cameras)]
        ev = {"id": eid, "ts": now - (n - i) * 3.0, "camera": cam, "score": 1.0 + (i % 50) / 10, "threshold": 1.0,
              "item": f"item_{i:05d}.png", "boxes": [{"x": 1, "y": 2, "w": 20, "h": 20, "residual": 0.3}],
              "frame_size": {"w": 64, "h": 64}, "model": {"name": "bench", "hash": "0" * 64}, "raw_score": 0.1}
        h.add(ev, [(f"p/{cam}/alarm/{eid}/crop/0", crop), (f"p/{cam}/alarm/{eid}/overlay", over)], (frame, "png"))
    h.close()
    return time.perf_counter() - t0


def bench_page(bundle: str, alarms: int, loads: int = 20) -> dict:
    from .broker import Mosquitto, free_port

    work = tempfile.mkdtemp(prefix="bench-page-")
    fill_s = fill_history(os.path.join(work, "history"), alarms)
    os.makedirs(os.path.join(work, "empty"))
    port = free_port()
    with open(os.path.join(work, "token"), "w") as f:
        f.write(TOKEN)
    with Mosquitto(workdir=os.path.join(work, "broker"), persistence=False) as b:
        p = console_agent(work, bundle, b.port, port)
        try:
            return {"alarms_in_history": alarms, "fill_s": round(fill_s, 1), **_page_times(port, loads)}
        finally:
            p.terminate()
            p.wait(60)


def console_agent(work: str, bundle: str, mqtt_port: int, port: int, name: str = "bench",
                  console: bool = True, log: str | None = "agent.log") -> subprocess.Popen:
    """Start an agent with one idle folder camera (``work/empty``), history in ``work/history``
    and, with ``console``, the console on ``port`` with the token in ``work/token``."""
    cfg = os.path.join(work, f"agent-{name}{'-console' if console else ''}.toml")
    with open(cfg, "w") as f:
        f.write(f'device_id = "{name}"\nlog_level = "WARNING"\n[model]\nbundle = "{bundle}"\n[mqtt]\nport = {mqtt_port}\n'
                f'[store]\npath = "{work}/events.db"\n[history]\npath = "{work}/history"\n'
                + (f'[http]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{work}/token"\n' if console else "")
                + f'[[cameras]]\nname = "{name}"\n[cameras.source]\nkind = "folder"\nuri = "{work}/empty"\n')
    err = open(os.path.join(work, log), "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=err)


def _page_times(port: int, loads: int) -> dict:
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            t0 = time.perf_counter()
            _get(url)  # the first load renders the page; the agent keeps it while history is unchanged
            first = time.perf_counter() - t0
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the agent's console did not come up in 120 s")
            time.sleep(0.5)
    times, size = [], 0
    for _ in range(loads):
        t0 = time.perf_counter()
        size = len(_get(url))
        times.append(time.perf_counter() - t0)
    out = {"get_page_first_ms": round(1000 * first, 1), "get_page_median_ms": round(1000 * float(np.median(times)), 1),
           "get_page_max_ms": round(1000 * max(times), 1), "page_bytes": size, "loads": loads}
    out.update(_browser_load(url, loads))
    return out


def _browser_load(url: str, loads: int) -> dict:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return {"browser": "chromium not installed: no browser figure"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        drv.get(url)
        drv.find_element("id", "token").send_keys(TOKEN)
        drv.find_element("id", "login").click()
        times = []
        for _ in range(loads):
            drv.get(url)
            t = drv.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                                   "return [n.loadEventEnd - n.startTime, n.domContentLoadedEventEnd - n.startTime];")
            times.append(t)
        rows = drv.execute_script("return document.querySelectorAll('#rows tr').length")
    finally:
        drv.quit()
    return {"browser_load_median_ms": round(float(np.median([t[0] for t in times])), 1),
            "browser_dom_ready_median_ms": round(float(np.median([t[1] for t in times])), 1),
            "rows_shown": rows}


def bench_console(bundle: str, args) -> dict:
    return {"poll": args.console_poll, "fps": bench_fps(bundle, args), "page": bench_page(bundle, args.page_alarms)}
