"""What each console request costs the agent process (docs/console.md, "The HTTP server"): a real
agent (the CLI, as a process) on an empty folder with the console on and a history of N alarms,
each endpoint hit K times over one keep-alive connection; the agent's utime + stime
(/proc/<pid>/stat, Linux) per request, its idle rate subtracted; and the niceness of its threads.

    python -m research.console_profile [--alarms 500] [--size camera|bench] [--k 300]
    python -m research.console_profile --idle-only    # idle CPU of the agent, console off and on

``camera``: 300 px crops of a 1280x1024 frame; ``bench``: ganomaly-bench's 96 px crops."""

import argparse
import http.client
import json
import os
import re
import tempfile
import time
import uuid

import cv2

from ganomaly_edge.agent.history import History
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR
from ganomaly_edge.tools.bench_console import console_agent
from ganomaly_edge.tools.broker import Mosquitto, free_port

TOKEN = "prof-console-token-0123456789abcdef"
HZ = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ


def fill(folder, n, size):
    from skimage import data as skd

    h = History(folder, max_days=3650, max_mb=100000)
    photo = cv2.cvtColor(skd.astronaut(), cv2.COLOR_RGB2BGR)  # 512x512
    if size == "camera":  # a 1280x1024 camera: 300 px crops, the whole frame as overlay
        frame_img = cv2.resize(photo, (1280, 1024))
        crop_img = frame_img[100:400, 200:500]
    else:  # the bench's 64x64 frames: 96 px crops (min_crop_px)
        frame_img = cv2.resize(photo, (64, 64))
        crop_img = cv2.resize(frame_img[:24, :24], (96, 96), interpolation=cv2.INTER_NEAREST)
    crop = cv2.imencode(".jpg", crop_img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    over = cv2.imencode(".jpg", frame_img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    frame = cv2.imencode(".jpg", frame_img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    now = time.time()
    for i in range(n):
        eid = uuid.uuid4().hex
        ev = {"id": eid, "ts": now - (n - i) * 3.0, "camera": "prof", "score": 1.0 + (i % 50) / 10,
              "threshold": 1.0, "item": f"item_{i:05d}.png",
              "boxes": [{"x": 1, "y": 2, "w": 20, "h": 20, "residual": 0.3}],
              "frame_size": {"w": frame_img.shape[1], "h": frame_img.shape[0]},
              "model": {"name": "prof", "hash": "0" * 64}, "raw_score": 0.1}
        h.add(ev, [(f"p/prof/alarm/{eid}/crop/0", crop), (f"p/prof/alarm/{eid}/overlay", over)], (frame, "jpg"))
    h.close()
    return len(crop)


def idle_cpu(work, mqtt_port, port, console, seconds=20):
    p = console_agent(work, f"{BUNDLE_DIR}/recon", mqtt_port, port, "prof", console=console, log=None)
    try:
        time.sleep(10)
        c0 = cpu(p.pid)
        time.sleep(seconds)
        return round(1000 * (cpu(p.pid) - c0) / seconds, 2)
    finally:
        p.terminate()
        p.wait(60)


def main():
    conn = None
    ap = argparse.ArgumentParser()
    ap.add_argument("--alarms", type=int, default=500)
    ap.add_argument("--size", default="camera", choices=["camera", "bench"])
    ap.add_argument("--k", type=int, default=300)
    ap.add_argument("--idle-only", action="store_true", help="the agent's idle CPU, console off and on")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="prof-console-")
    crop_bytes = fill(os.path.join(work, "history"), args.alarms, args.size)
    os.makedirs(os.path.join(work, "empty"))
    port = free_port()
    with open(os.path.join(work, "token"), "w") as f:
        f.write(TOKEN)
    with Mosquitto(workdir=os.path.join(work, "broker"), persistence=False) as b:
        if args.idle_only:
            for console in (False, True, False, True):
                print(json.dumps({"console": console, "idle_cpu_ms_per_s": idle_cpu(work, b.port, port, console)}))
            return
        p = console_agent(work, f"{BUNDLE_DIR}/recon", b.port, port, "prof")
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/healthz")
                    conn.getresponse().read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            hdr = {"Authorization": f"Bearer {TOKEN}"}

            def get(path):
                nonlocal conn
                try:
                    conn.request("GET", path, headers=hdr)
                    r = conn.getresponse()
                except (http.client.RemoteDisconnected, BrokenPipeError):  # keep-alive timed out (5 s)
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", path, headers=hdr)
                    r = conn.getresponse()
                body = r.read()
                assert r.status == 200, (path, r.status, body[:200])
                return body

            page = get("/")
            thumbs = [m.decode() for m in re.findall(rb'src="(/api/alarms/[0-9a-f]{32}/images/[a-z0-9-]+)"', page)][:20]
            time.sleep(3)
            c0, t0 = cpu(p.pid), time.monotonic()
            time.sleep(5)
            idle = (cpu(p.pid) - c0) / (time.monotonic() - t0)
            out = {"alarms": args.alarms, "size": args.size, "crop_bytes": crop_bytes,
                   "thumb_bytes": len(get(thumbs[0])), "thumb_url": thumbs[0].rsplit("/", 1)[1],
                   "page_bytes": len(page), "idle_cpu_ms_per_s": round(1000 * idle, 2)}
            for name, paths in (("page", ["/"]), ("page_uncached", [f"/?nocache={i}" for i in range(args.k)]), ("status", ["/api/status"]), ("metrics", ["/metrics"]),
                                ("thumbnail", thumbs), ("healthz", ["/healthz"])):
                k = args.k if name != "page" else max(args.k // 3, 50)
                for path in paths[:3]:
                    get(path)  # warm
                c0, t0 = cpu(p.pid), time.monotonic()
                for i in range(k):
                    get(paths[i % len(paths)])
                dt, dc = time.monotonic() - t0, cpu(p.pid) - c0
                out[f"{name}_cpu_ms"] = round(1000 * (dc - idle * dt) / k, 2)
                out[f"{name}_wall_ms"] = round(1000 * dt / k, 2)
            nice = {}
            for tid in os.listdir(f"/proc/{p.pid}/task"):
                comm = open(f"/proc/{p.pid}/task/{tid}/comm").read().strip()
                ni = int(open(f"/proc/{p.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])
                nice.setdefault(ni, []).append(comm)
            out["threads_by_nice"] = {k: sorted(v) for k, v in nice.items()}
            print(json.dumps(out))
        finally:
            p.terminate()
            p.wait(60)


if __name__ == "__main__":
    main()
