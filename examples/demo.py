"""``make demo``: train a demo bundle from real images, start a broker, run the agent on a demo
stream and show each alarm as an MQTT subscriber receives it.

Everything goes under ./demo (kept between runs: the second run skips training). Each run leaves
what the subscriber received in demo/out/: every alarm's crops and overlay as JPEG files, and
demo/out/index.html, a page with one row per alarm (score, item, what the item really was).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.abspath("demo")


def sh(*cmd: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def tool(name: str) -> str:
    """The console script installed beside this Python (the venv's bin/)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):
        raise SystemExit(f"{name} is not installed beside {sys.executable}: run 'make setup' first")
    return path


def _usable(bundle: str) -> bool:
    from ganomaly_edge.engine import BundleError, open_bundle

    try:
        open_bundle(bundle)
        return True
    except BundleError as e:
        if os.path.exists(bundle):
            print(f"rebuilding the demo bundle: {e}", flush=True)
        return False


def _usable_checkpoint(ckpt: str) -> bool:
    if not os.path.exists(ckpt):
        return False
    from ganomaly_edge.train.checkpoint import load_checkpoint

    try:
        return bool(load_checkpoint(ckpt).get("complete"))
    except ValueError:
        return False


def demo_checkpoint(args) -> str:
    """The demo's checkpoint under HERE, trained (and its 1,500 normal items written) when absent
    or left by an older version; research/int8_check.py uses it too."""
    from .scene import write_training_folder

    os.makedirs(HERE, exist_ok=True)
    train_dir = os.path.join(HERE, "train_images")
    ckpt = os.path.join(HERE, "tshirt.pt")
    if not _usable_checkpoint(ckpt):
        if not os.path.isdir(train_dir):
            print("writing 1,500 normal items (Fashion-MNIST T-shirts on a conveyor) ...", flush=True)
            write_training_folder(train_dir, 1500)
        sh(tool("ganomaly-train"), "--data", train_dir, "--out", ckpt, "--image-size", "32",
           "--channels", "3", "--epochs", str(args.epochs), "--width", "32", "--batch-size", "32",
           "--score", args.score, "--far", str(args.far),
           # The recipe the demo figures in README were measured with: every epoch, the last one
           # kept, no augmentation (a T-shirt upside down is not a normal item on this line).
           "--patience", "0", "--select", "last", "--no-augment")
    return ckpt


def build_assets(args) -> dict:
    from .scene import stream_items, write_video

    os.makedirs(HERE, exist_ok=True)
    bundle = args.bundle or os.path.join(HERE, "bundle")
    if not _usable(bundle):  # absent, or left by an older version (another bundle format)
        ckpt = demo_checkpoint(args)
        sh(tool("ganomaly-build-engine"), ckpt, "--out", bundle, "--name", "tshirt-demo")
    video = os.path.join(HERE, "conveyor.avi")
    truth_path = os.path.join(HERE, "conveyor_truth.json")
    if not os.path.exists(video):
        truth = write_video(video, stream_items(args.items, seed=5), frames_per_item=3, fps=10)
        with open(truth_path, "w") as f:
            json.dump(truth, f)
    with open(truth_path) as f:
        return {"bundle": bundle, "video": video, "truth": json.load(f)}


class Gallery:
    """What the demo's subscriber receives, kept: out/<event>/crop-<k>.jpg and overlay.jpg for each
    alarm, and out/index.html, which shows them with the score and the item's true kind."""

    def __init__(self, out: str):
        import shutil

        self.out = out
        shutil.rmtree(out, ignore_errors=True)  # this run's alarms only
        os.makedirs(out)
        self.alarms: list[dict] = []
        self.files: dict[str, list[str]] = {}  # event id -> JPEG file names, in arrival order
        self.jpegs = self.bytes = 0

    def add(self, topic: str, payload: bytes) -> dict | None:
        """Keep one message; the alarm event when it is one."""
        parts = topic.split("/")
        if topic.endswith("/alarm"):
            ev = json.loads(payload)
            if any(a["id"] == ev["id"] for a in self.alarms):
                return None  # a redelivery (QoS 1, at least once)
            self.alarms.append(ev)
            return ev
        if "alarm" in parts and ("crop" in parts or parts[-1] == "overlay"):
            event_id = parts[parts.index("alarm") + 1]
            name = f"crop-{parts[-1]}.jpg" if "crop" in parts else "overlay.jpg"
            os.makedirs(os.path.join(self.out, event_id), exist_ok=True)
            with open(os.path.join(self.out, event_id, name), "wb") as f:
                f.write(payload)
            self.files.setdefault(event_id, []).append(name)
            self.jpegs, self.bytes = self.jpegs + 1, self.bytes + len(payload)
        return None

    def write_html(self, kind_of, summary: str) -> str:
        """out/index.html: the summary line, then one row per alarm; ``kind_of(event)`` is the
        item's true kind (normal, stain, hole, foreign)."""
        import html

        rows = []
        for ev in sorted(self.alarms, key=lambda e: e["frame_index"]):
            names = sorted(self.files.get(ev["id"], []), key=lambda n: (n != "overlay.jpg", n))
            imgs = "".join(f'<img src="{ev["id"]}/{n}" title="{n}" height="160">' for n in names)
            kind = kind_of(ev)
            rows.append(f'<tr class="{"false" if kind == "normal" else "hit"}"><td>{ev["frame_index"]}</td>'
                        f'<td>{ev["score"]:.2f}</td><td>{html.escape(kind)}</td><td>{len(ev["boxes"])}</td>'
                        f"<td>{imgs}</td></tr>")
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ganomaly-edge demo</title>
<style>body{{font-family:sans-serif}} td{{padding:4px;vertical-align:middle}} img{{margin-right:4px;
image-rendering:pixelated}} tr.false td:nth-child(3){{color:#b00}}</style></head><body>
<h1>ganomaly-edge demo: {len(self.alarms)} alarms</h1>
<p>{html.escape(summary)}</p>
<p>Each row: the overlay (the frame, each box outlined and numbered) and one crop per box, as a
subscriber to <code>ganomaly/demo/#</code> received them.</p>
<table><tr><th>frame</th><th>score</th><th>item was</th><th>boxes</th><th>overlay and crops</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
        path = os.path.join(self.out, "index.html")
        with open(path, "w") as f:
            f.write(page)
        return path


def _write_config(path: str, bundle: str, video: str, port: int, args) -> None:
    threshold = f"threshold = {args.threshold}\n" if args.threshold is not None else ""
    with open(path, "w") as f:
        f.write(f"""device_id = "demo"
[model]
bundle = "{bundle}"
[mqtt]
port = {port}
stats_interval_s = 5
[store]
path = "{HERE}/events.db"
[[cameras]]
name = "line1"
roi = {{ x = 16, y = 16, w = 64, h = 64 }}
[cameras.source]
kind = "file"
uri = "{video}"
fps = {args.fps}
[cameras.decision]
k = 2
n = 3
cooldown_s = 0.5
{threshold}""")


def _on_message(gallery: Gallery):
    def on_message(client, userdata, msg):
        ev = gallery.add(msg.topic, msg.payload)
        if ev is not None:
            boxes = ", ".join(f"{b['w']}x{b['h']}@{b['x']},{b['y']}" for b in ev["boxes"])
            print(f"  ALARM {ev['id'][:8]} camera={ev['camera']} frame={ev['frame_index']} score={ev['score']:.2f} "
                  f"boxes=[{boxes}]", flush=True)
        elif msg.topic.endswith("/available") or msg.topic.endswith("/status"):
            print(f"  {msg.topic} = {msg.payload.decode()}", flush=True)
        elif msg.topic.endswith("/stats"):
            s = json.loads(msg.payload)["cameras"]["line1"]
            print(f"  stats: {s['fps_processed']} fps processed, {s['frames_processed']} frames, "
                  f"{s['alarms']} alarms, dropped {s['dropped']}", flush=True)
    return on_message


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=60, help="items on the demo conveyor")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--score", default="peak", help="anomaly score of the demo model (see README)")
    ap.add_argument("--fps", type=float, default=15.0, help="playback rate of the demo stream")
    ap.add_argument("--far", type=float, default=0.05,
                    help="per-frame false-alarm target of the demo model's threshold; the agent alarms only "
                         "when 2 of 3 frames of an item exceed it, so items alarm falsely far less often")
    ap.add_argument("--dir", default="demo", help="where everything goes (default ./demo)")
    ap.add_argument("--bundle", help="run this bundle instead of training the demo's")
    ap.add_argument("--threshold", type=float, help="the agent's alarm threshold (default: the bundle's, 1.0)")
    return ap


def main(argv: list[str] | None = None) -> int:
    global HERE
    args = _parser().parse_args(argv)
    HERE = os.path.abspath(args.dir)

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ganomaly_edge.tools.broker import Mosquitto

    assets = build_assets(args)
    broker = Mosquitto(workdir=os.path.join(HERE, "broker"), persistence=False)
    os.makedirs(broker.dir, exist_ok=True)
    broker.start()
    print(f"mosquitto listening on 127.0.0.1:{broker.port}", flush=True)
    config = os.path.join(HERE, "agent.toml")
    _write_config(config, assets["bundle"], assets["video"], broker.port, args)
    gallery = Gallery(os.path.join(HERE, "out"))
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="demo-subscriber")
    sub.on_message = _on_message(gallery)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("ganomaly/demo/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    print(f"\nsubscriber on ganomaly/demo/# ; running: ganomaly-agent --config {config}\n", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", config], check=True)
        time.sleep(1.0)
    finally:
        sub.loop_stop()
        broker.stop()
    return _report(gallery, assets["truth"], config)


def _report(gallery: Gallery, truth: list[dict], config: str) -> int:
    anomalous = [t for t in truth if t["kind"] != "normal"]

    def kind_of(ev):
        return next((t["kind"] for t in truth if t["frames"][0] <= ev["frame_index"] <= t["frames"][-1]), "normal")

    alarms = gallery.alarms
    caught = {t["item"] for t in anomalous
              for ev in alarms if t["frames"][0] <= ev["frame_index"] <= t["frames"][-1]}
    false = [ev for ev in alarms if kind_of(ev) == "normal"]
    summary = (f"{len(alarms)} alarms received ({gallery.jpegs} JPEGs, {gallery.bytes // 1024} KiB): "
               f"{len(caught)} of {len(anomalous)} anomalous items caught, {len(false)} false alarm(s) "
               f"on {len(truth) - len(anomalous)} normal items.")
    page = gallery.write_html(kind_of, summary)
    print(f"\n{summary}\nCrops and overlays: {gallery.out}/<event id>/; all of them on one page: {page}\n"
          f"The demo's broker has stopped. To run the agent again on your own broker: ganomaly-agent --config "
          f"{config} (edit [mqtt]), or run make demo again.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
