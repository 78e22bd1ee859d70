"""``ganomaly-bench``: speed figures, printed, from one run on this machine.

    ganomaly-bench engine BUNDLE [--backend auto] [--batch 1,8,32] [--checkpoint CKPT]
    ganomaly-bench engine --synthetic 64x64x3       # an untrained model of the official widths
    ganomaly-bench agent [--synthetic 64x64x3 | BUNDLE]
    ganomaly-bench items [--synthetic 64x64x3 | BUNDLE] [--rate 10] [--items 300]
    ganomaly-bench agent [--synthetic 64x64x3 | BUNDLE] --console   # tools/bench_console.py

engine: batch-1 latency (median, p99), batched throughput, the engine's own overhead around
the backend, PyTorch eager from the checkpoint as the baseline, and achieved GFLOP/s against a
float32 matrix-product peak measured in the same run.
agent: end-to-end processed fps and capture->publish latency of the agent on a file source
(real mosquitto on loopback, a set share of frames raising alarms), interleaved in rounds with
the engine-only throughput of the same bundle on the same frames, and the agent's peak RSS.
items: p50/p99 trigger-to-result latency of item mode at a steady trigger rate (tools/bench_items.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ganomaly_edge.engine.registry import CHOICES
from ganomaly_edge.engine.version import version


def matmul_peak(n: int = 2048, reps: int = 20) -> float:
    """float32 GFLOP/s of an n x n matrix product (numpy's BLAS), best of ``reps``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def graph_gflop(onnx_path: str) -> float:
    """GFLOP per image of the convolutions and matrix products in the graph (2 per multiply-add)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = onnx.load(onnx_path)
    for i in m.graph.input:  # batch 1
        i.type.tensor_type.shape.dim[0].dim_value = 1
    m = shape_inference.infer_shapes(m)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    flops = 0
    for node in m.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = inits[node.input[1]]
            if node.op_type == "Conv":
                out = shapes[node.output[0]]
                flops += 2 * np.prod(out) * np.prod(w[1:])  # out elems x (C_in/g x kh x kw)
            else:
                inp = shapes[node.input[0]]
                flops += 2 * np.prod(inp) * np.prod(w[1:])  # in elems x (C_out x kh x kw)
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0]) or inits.get(node.input[0])
            b = shapes.get(node.input[1]) or inits.get(node.input[1])
            if a and b:
                flops += 2 * np.prod(a) * b[-1]
    return flops / 1e9


def timed(fn, reps: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out * 1000


def synthetic(spec: str, workdir: str, score: str = "recon") -> tuple[str, str]:
    """An untrained GANomaly of the official widths (ngf 64, nz 100), calibrated at init, as a
    checkpoint and a bundle (speed does not depend on the weights; it does on the score)."""
    from ganomaly_edge.train.export import checkpoint_to_bundle
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    s, _, c = (int(v) for v in spec.lower().split("x"))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (300, s, s, c), dtype=np.uint8)
    ck = os.path.join(workdir, f"synthetic_{spec}.pt")
    # "recon" costs what "peak" does (within 1 %); --score measures any other.
    Trainer(TrainConfig(image_size=s, channels=c, epochs=0, score=score), imgs, out_path=ck,
            progress=False).run()
    b = os.path.join(workdir, f"bundle_{spec}_{score}")
    checkpoint_to_bundle(ck, b, name=f"synthetic-{spec}")
    return ck, b


def bench_engine(bundle: str, checkpoint: str | None, backend: str, batches: list[int], reps: int,
                 threads: int) -> dict:
    from ganomaly_edge.engine import load

    peak = matmul_peak()
    eng = load(bundle, backend, threads=threads)
    h, w, c = eng.spec.shape
    gflop = graph_gflop(os.path.join(eng.bundle.path, "model.onnx"))
    rng = np.random.default_rng(0)
    x1 = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
    res: dict = {"input": f"{h}x{w}x{c}", "backend": eng.backend, "gflop_per_image": round(gflop, 4),
                 "matmul_peak_gflops": round(peak, 1)}
    t_engine = timed(lambda: eng.infer(x1), reps)
    res["batch1_median_ms"] = round(float(np.median(t_engine)), 3)
    res["batch1_p99_ms"] = round(float(np.percentile(t_engine, 99)), 3)
    res["achieved_gflops"] = round(gflop / (np.median(t_engine) / 1000), 1)
    res["share_of_peak"] = round(res["achieved_gflops"] / peak, 3)
    if eng.backend == "onnxruntime":
        sess, name = eng.session, eng.spec.name
        t_raw = timed(lambda: sess.run(["score", "residual"], {name: x1}), reps)
        res["session_median_ms"] = round(float(np.median(t_raw)), 3)
        res["engine_overhead"] = round(float(np.median(t_engine) / np.median(t_raw) - 1), 4)
    thr = {}
    for b in batches:
        xb = rng.integers(0, 256, (b, h, w, c), dtype=np.uint8)
        t = timed(lambda: eng.infer(xb), max(5, reps // max(b // 2, 1)), warmup=2)
        thr[b] = round(b / (np.median(t) / 1000), 1)
    res["throughput_img_s"] = thr
    if checkpoint:
        import torch

        from ganomaly_edge.train.export import scorer_from_checkpoint
        from ganomaly_edge.train.checkpoint import load_checkpoint

        torch.set_num_threads(threads or os.cpu_count() or 1)
        sc = scorer_from_checkpoint(load_checkpoint(checkpoint))
        xt = torch.from_numpy(x1)
        with torch.no_grad():
            t_torch = timed(lambda: sc(xt), max(20, reps // 4))
        res["pytorch_eager_median_ms"] = round(float(np.median(t_torch)), 3)
        res["speedup_vs_pytorch"] = round(float(np.median(t_torch) / np.median(t_engine)), 2)
    eng.close()
    # Conservative: the best of the peaks measured before and after, so the share is not inflated
    # by a slow moment during the first measurement.
    peak = max(peak, matmul_peak())
    res["matmul_peak_gflops"] = round(peak, 1)
    res["share_of_peak"] = round(res["achieved_gflops"] / peak, 3)
    return res


def _agent_run(bundle: str, video: str, work: str, threads: int, threshold: float, fps: float | None,
               spinning: bool, max_batch: int = 8, workers: int = 0, camera_extra: str = "", extra: str = "",
               backend: str = "auto") -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ganomaly_edge.tools.broker import Mosquitto

    with Mosquitto(workdir=os.path.join(work, "broker"), persistence=False) as b:
        cfg = os.path.join(work, "agent.toml")
        pace = f"fps = {fps}" if fps else ""
        with open(cfg, "w") as f:
            f.write(f"""device_id = "bench"
log_level = "WARNING"
[model]
bundle = "{bundle}"
backend = "{backend}"
threads = {threads}
max_batch = {max_batch}
workers = {workers}
spinning = {"true" if spinning else "false"}
[mqtt]
port = {b.port}
stats_interval_s = 1000
[store]
path = "{work}/events-{fps}.db"
{extra}
[[cameras]]
name = "bench"
{camera_extra}
[cameras.source]
kind = "file"
uri = "{video}"
{pace}
[cameras.decision]
threshold = {threshold}
k = 1
n = 1
cooldown_s = 0
""")
        stats: list[dict] = []
        sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c_, u, m: stats.append(json.loads(m.payload))
        sub.connect("127.0.0.1", b.port)
        sub.subscribe("ganomaly/bench/stats", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        p = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg], capture_output=True, text=True)
        time.sleep(0.5)
        sub.loop_stop()
    if p.returncode != 0 or not stats:
        raise RuntimeError(p.stderr[-2000:])
    return stats[-1]


def sustained_fps(eng, frames: np.ndarray, batch: int, workers: int = 1) -> float:
    """Frames per second over a whole stream (wall clock, hiccups included, as the agent is timed),
    with ``workers`` threads taking batches from it side by side (as the agent's workers do)."""
    import threading

    eng.infer(frames[:batch])
    starts = iter(range(0, len(frames), batch))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(starts, None)
            if i is None:
                return
            eng.infer(frames[i:i + batch])

    threads = [threading.Thread(target=work) for _ in range(workers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(frames) / (time.perf_counter() - t)


def bench_agent(bundle: str, frames: int, threads: int, alarm_rate: float = 0.01, spinning: bool = False,
                rounds: int = 3, max_batch: int = 8, workers: int = 0, paced_fps: float = 30.0) -> dict:
    """The agent on a file source, ``rounds`` times, each round interleaving: the engine alone on
    the same decoded frames (frames / wall-clock seconds, the best of one caller with every core
    at batch 1 and at the agent's largest micro-batch, and of one caller per core with a thread
    each), the agent as fast as it goes (files never drop, so the queue stays full), and the
    agent paced at a camera's frame rate (``paced_fps``; 0 = half the engine's throughput) for
    the capture->PUBACK latency. Medians over the
    rounds are reported: this host's speed drifts by 10-20 % within a minute, and interleaving
    exposes both sides to the same drift. The threshold is set at the stream's (1 - alarm_rate)
    quantile, so alarms exercise localisation, JPEG crops and overlay, SQLite and MQTT QoS 1 up
    to the PUBACK."""
    import cv2

    from ganomaly_edge.engine import load

    from ganomaly_edge.agent.config import ModelConfig

    cores = os.cpu_count() or 1
    n_workers, per_worker = ModelConfig(workers=workers, threads=threads).parallelism(cores)  # as the agent
    eng_all = load(bundle, "auto", threads=threads or cores, spinning=spinning)  # one caller, every core
    eng_w = load(bundle, "auto", threads=per_worker, spinning=spinning)  # as each agent worker runs it
    if not eng_w.concurrent:
        n_workers = 1
    h, w, c = eng_all.spec.shape
    rng = np.random.default_rng(0)
    x1 = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
    t1_all = timed(lambda: eng_all.infer(x1), 200)
    t1 = timed(lambda: eng_w.infer(x1), 200)
    work = tempfile.mkdtemp(prefix="bench-agent-")
    video = os.path.join(work, "stream.avi")
    vw = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(frames):
        vw.write(np.roll(base, 3 * i, axis=1))
    vw.release()
    cap = cv2.VideoCapture(video)  # what the agent will see (after MJPG)
    decoded = []
    for i in range(frames):
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f if c == 3 else cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[..., None])
    cap.release()
    stream = np.ascontiguousarray(np.stack(decoded))
    sample = stream[::5]
    cal = np.concatenate([eng_all.calibrated(eng_all.infer(sample[i:i + 8])[0]) for i in range(0, len(sample), 8)])
    threshold = float(np.quantile(cal, 1 - alarm_rate))
    # The latency run needs enough alarms for a p99: a quarter of its frames raise one.
    threshold_paced = float(np.quantile(cal, 0.75))
    engine_fps, agent_fps, p50, p99, rss, rows = [], [], [], [], [], []
    for r in range(rounds):
        e_fps = max(sustained_fps(eng_all, stream, 1), sustained_fps(eng_all, stream, max_batch),
                    sustained_fps(eng_w, stream, max_batch, n_workers))
        fast = _agent_run(bundle, video, work, threads, threshold, None, spinning, max_batch, workers)
        cam = fast["cameras"]["bench"]
        a_fps = cam["frames_processed"] / cam["busy_s"]
        paced_fps = paced_fps or round(e_fps / 2, 1)
        if r == 0:  # about 20 s of video at the paced rate
            paced_video = os.path.join(work, "paced.avi")
            vw = cv2.VideoWriter(paced_video, cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
            for i in range(min(len(stream), max(int(paced_fps * 20), 300))):
                vw.write(np.roll(base, 3 * i, axis=1))
            vw.release()
        paced = _agent_run(bundle, paced_video, work, threads, threshold_paced, paced_fps, spinning, max_batch, workers)
        lat = paced["capture_to_publish"] or {}
        engine_fps.append(e_fps)
        agent_fps.append(a_fps)
        p50.append(lat.get("p50_ms", float("nan")))
        p99.append(lat.get("p99_ms", float("nan")))
        rss.append(max(fast["peak_rss_mb"] or 0, paced["peak_rss_mb"] or 0))
        rows.append({"round": r, "engine_only_fps": round(e_fps, 1), "agent_fps": round(a_fps, 1),
                     "fps_ratio": round(a_fps / e_fps, 3), "alarms": cam["alarms"],
                     "paced_alarms": paced["cameras"]["bench"]["alarms"],
                     "dropped_paced": paced["cameras"]["bench"]["dropped"],
                     "capture_to_publish_ms": lat,
                     "capture_to_decision_ms": paced["cameras"]["bench"]["latency"]["capture_to_decision"]})
    eng_all.close()
    eng_w.close()
    med = lambda v: float(np.median(v))  # noqa: E731
    return {"input": f"{h}x{w}x{c}", "spinning": spinning, "frames": len(stream), "rounds": rounds,
            "alarm_rate": alarm_rate, "max_batch": max_batch, "workers": n_workers, "threads_per_worker": per_worker,
            "engine_only_fps": round(med(engine_fps), 1), "agent_fps": round(med(agent_fps), 1),
            "fps_ratio": round(med(agent_fps) / med(engine_fps), 3),
            "fps_ratio_median_of_rounds": round(med([a / e for a, e in zip(agent_fps, engine_fps)]), 3),
            "engine_batch1_median_ms": round(med(t1), 3), "engine_batch1_median_all_cores_ms": round(med(t1_all), 3),
            "paced_fps": paced_fps,
            "capture_to_publish_p50_ms": round(med(p50), 2), "capture_to_publish_p99_ms": round(med(p99), 2),
            "latency_bound_ms": round(3 * med(t1) + 10, 2),
            "latency_bound_all_cores_ms": round(3 * med(t1_all) + 10, 2), "peak_rss_mb": max(rss), "per_round": rows}


def bench_drain(events: int, blob_kb: int, max_inflight: int) -> dict:
    """A backlog of ``events`` stored while the broker was away, then drained to a real mosquitto:
    how fast the store empties (each event: a JSON message and one ``blob_kb`` KiB JPEG-sized blob)."""
    import uuid

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.store import EventStore
    from ganomaly_edge.agent.topics import Topics

    from .broker import Mosquitto

    work = tempfile.mkdtemp(prefix="bench-drain-")
    store = EventStore(os.path.join(work, "events.db"), max_events=events + 1, max_bytes=1 << 40)
    blob = os.urandom(blob_kb << 10)
    t = time.perf_counter()
    for i in range(events):
        eid = uuid.uuid4().hex
        store.add(eid, "cam", "bench/cam/alarm", {"id": eid, "i": i}, [(f"bench/cam/alarm/{eid}/crop/0", blob)])
    fill_s = time.perf_counter() - t
    with Mosquitto(workdir=os.path.join(work, "broker"), persistence=False) as b:
        pub = MqttPublisher(MqttConfig(port=b.port, max_inflight=max_inflight), Topics("bench"), "bench-drain", store)
        t = time.perf_counter()
        pub.start()
        while store.depth()[0] and time.perf_counter() - t < 900:
            time.sleep(0.01)
        drain_s = time.perf_counter() - t
        left = store.depth()[0]
        pub.stop(1.0)
    store.close()
    return {"events": events, "blob_kib": blob_kb, "max_inflight": max_inflight, "fill_s": round(fill_s, 2),
            "drain_s": round(drain_s, 2), "left": left, "events_per_s": round((events - left) / drain_s, 1)}


def bench_soak(duration_s: float, sample_s: float, max_mb: float) -> dict:
    """The agent for ``duration_s`` on a looping video where every frame alarms (a shipped 16x16
    bundle: alarms as fast as the agent can build, store and publish them), a real mosquitto and a
    subscriber that takes everything; every ``sample_s`` the database and WAL sizes and the
    agent's RSS."""
    import cv2
    import paho.mqtt.client as mqtt
    import psutil
    from paho.mqtt.enums import CallbackAPIVersion

    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

    from .broker import Mosquitto

    work = tempfile.mkdtemp(prefix="bench-soak-")
    video = os.path.join(work, "loop.avi")
    vw = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 32))
    rng = np.random.default_rng(0)
    for _ in range(300):
        vw.write(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    vw.release()
    db = os.path.join(work, "events.db")
    with Mosquitto(workdir=os.path.join(work, "broker"), persistence=False) as b:
        cfg = os.path.join(work, "agent.toml")
        with open(cfg, "w") as f:
            f.write(f'device_id = "soak"\nlog_level = "WARNING"\n[model]\nbundle = "{BUNDLE_DIR}/recon"\n'
                    f'[mqtt]\nport = {b.port}\nstats_interval_s = 60\n[store]\npath = "{db}"\nmax_mb = {max_mb}\n'
                    f'[[cameras]]\nname = "loop"\n[cameras.source]\nkind = "file"\nuri = "{video}"\nloop = true\n'
                    '[cameras.decision]\nthreshold = -1000000.0\nk = 1\nn = 1\ncooldown_s = 0\n')
        got = {"alarms": 0}
        sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="soak-sub")
        sub.on_message = lambda c, u, m: got.__setitem__("alarms", got["alarms"] + m.topic.endswith("/alarm"))
        sub.connect("127.0.0.1", b.port)
        sub.subscribe("ganomaly/soak/#", qos=1)
        sub.loop_start()
        p = subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "agent.log"), "w"))
        proc, samples, t0 = psutil.Process(p.pid), [], time.monotonic()
        while time.monotonic() - t0 < duration_s and p.poll() is None:
            time.sleep(sample_s)
            sizes = {k: (os.path.getsize(db + sfx) if os.path.exists(db + sfx) else 0)
                     for k, sfx in (("db", ""), ("wal", "-wal"), ("reserve", "-reserve"))}
            samples.append({"t_s": round(time.monotonic() - t0), "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                            **{f"{k}_mb": round(v / 2**20, 2) for k, v in sizes.items()}, "received": got["alarms"]})
            print(json.dumps(samples[-1]), flush=True)
        p.terminate()
        p.wait(60)
        sub.loop_stop()
    after = [s for s in samples if s["t_s"] >= 60] or samples
    return {"duration_s": duration_s, "max_mb": max_mb, "alarms_received": got["alarms"],
            "alarms_per_s": round(got["alarms"] / max(samples[-1]["t_s"], 1), 1),
            "max_wal_mb": max(s["wal_mb"] for s in samples), "max_files_mb": max(s["db_mb"] + s["wal_mb"] + s["reserve_mb"]
                                                                              for s in samples),
            "rss_mb_at_60s": after[0]["rss_mb"], "rss_mb_end": samples[-1]["rss_mb"],
            "rss_growth_after_first_minute": round(samples[-1]["rss_mb"] / after[0]["rss_mb"] - 1, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ganomaly-bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("engine", help="engine latency, throughput, GFLOP/s and the PyTorch baseline")
    e.add_argument("bundle", nargs="?")
    e.add_argument("--synthetic", help="e.g. 64x64x3: benchmark an untrained model of the official widths")
    e.add_argument("--checkpoint", help="checkpoint for the PyTorch eager baseline")
    e.add_argument("--backend", default="auto", choices=CHOICES)
    e.add_argument("--batch", default="1,8,32")
    e.add_argument("--reps", type=int, default=300)
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--compare", action="store_true",
                   help="every CPU path side by side in one run: our engine on ONNX Runtime and OpenVINO per "
                        "precision, raw ONNX Runtime and OpenVINO sessions on the same ONNX; interleaved rounds "
                        "(docs/int8-openvino.md)")
    e.add_argument("--int8", metavar="BUNDLE", help="--compare: the INT8 bundle of the same model")
    e.add_argument("--rounds", type=int, default=7, help="--compare: interleaved rounds; medians reported")
    e.add_argument("--profile", action="store_true", help="--compare: ONNX Runtime's per-operator profile")
    e.add_argument("--agent-frames", type=int, default=0,
                   help="--compare with a tiled bundle: also the agent's fps on a 1080p stream's ROI per backend "
                        "and precision, on this many frames a run (0 = skip)")
    e.add_argument("--score", default="recon",
                   help="score of the synthetic model (recon costs what peak does; the default score adds "
                        "a discriminator pass and two bank look-ups)")
    a = sub.add_parser("agent", help="end-to-end agent fps, latency and memory")
    a.add_argument("bundle", nargs="?")
    a.add_argument("--synthetic", default="64x64x3")
    a.add_argument("--frames", type=int, default=1500)
    a.add_argument("--threads", type=int, default=0)
    a.add_argument("--alarm-rate", type=float, default=0.01,
                   help="share of frames that raise an alarm (0.1 is a stress setting)")
    a.add_argument("--paced-fps", type=float, default=30.0,
                   help="frame rate of the latency run (a camera's; 0 = half the engine's throughput)")
    a.add_argument("--spinning", action="store_true", help="ONNX Runtime spin-waiting, in both runs")
    a.add_argument("--rounds", type=int, default=3, help="interleaved engine/agent rounds; medians reported")
    a.add_argument("--max-batch", type=int, default=8, help="the agent's largest micro-batch")
    a.add_argument("--workers", type=int, default=0, help="the agent's inference workers (0 = auto)")
    a.add_argument("--console", action="store_true", help="instead: agent fps with the console off and on "
                   "(polled like an open browser) at --console-rates, and the review page's load time with "
                   "--page-alarms alarms in history (tools/bench_console.py)")
    a.add_argument("--console-rates", default="0.01,0.1", help="alarm rates of the --console fps runs")
    a.add_argument("--page-alarms", type=int, default=10000, help="alarms in history for the page load figure")
    a.add_argument("--console-poll", default="browser", choices=["browser", "heavy"],
                   help="browser: an open review page and a Prometheus scrape; heavy: page, status, metrics every second")
    so = sub.add_parser("soak", help="the agent at a high alarm rate for minutes: store files and RSS over time")
    so.add_argument("--duration", type=float, default=600.0)
    so.add_argument("--sample", type=float, default=10.0)
    so.add_argument("--max-mb", type=float, default=64.0)
    t = sub.add_parser("tiles", help="the agent with a tiled bundle on a 1920x1080 stream: fps and "
                                     "capture-to-PUBACK latency for a region of interest")
    t.add_argument("bundle", help="a tiled bundle (ganomaly-train --tile)")
    t.add_argument("--roi", default="420,0,1080,1080", help="x,y,w,h in the 1920x1080 frame")
    t.add_argument("--working-size", action="append", default=[],
                   help="WIDTHxHEIGHT the ROI is resized to (repeatable; default: the bundle's)")
    t.add_argument("--frames", type=int, default=300)
    t.add_argument("--paced-fps", type=float, default=10.0, help="frame rate of the latency run")
    t.add_argument("--rounds", type=int, default=3)
    it = sub.add_parser("items", help="item mode: p50/p99 trigger-to-result latency at a steady trigger rate")
    it.add_argument("bundle", nargs="?")
    it.add_argument("--synthetic", default="64x64x3")
    it.add_argument("--rate", type=float, default=10.0, help="triggers per second")
    it.add_argument("--items", type=int, default=300)
    it.add_argument("--frame-rate", type=float, default=25.0, help="the camera's free-running frame rate")
    it.add_argument("--workers", type=int, default=0, help="the agent's [model] workers (default 0: its own choice)")
    d = sub.add_parser("drain", help="how fast a backlog of stored events drains to a real broker")
    d.add_argument("--events", type=int, default=10000)
    d.add_argument("--blob-kib", type=int, default=8, help="size of each event's JPEG-sized blob")
    d.add_argument("--max-inflight", type=int, default=20)
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.what == "soak":
        print(json.dumps(bench_soak(args.duration, args.sample, args.max_mb), indent=1))
        return 0
    if args.what == "tiles":
        from .bench_tiles import bench_tiles

        print(json.dumps(bench_tiles(args.bundle, args.roi, args.working_size, args.frames, args.paced_fps,
                                     args.rounds), indent=1))
        return 0
    if args.what == "drain":
        print(json.dumps(bench_drain(args.events, args.blob_kib, args.max_inflight), indent=1))
        return 0
    if args.what == "engine" and args.compare:
        from .bench_compare import bench_compare

        if not args.bundle:
            ap.error("--compare needs a BUNDLE (and --int8 for the INT8 one)")
        print(json.dumps(bench_compare(args.bundle, args.int8, args.rounds, args.threads, args.profile,
                                       args.agent_frames), indent=1))
        return 0
    work = tempfile.mkdtemp(prefix="ganomaly-bench-")
    ck = getattr(args, "checkpoint", None)
    bundle = args.bundle
    if not bundle:
        ck, bundle = synthetic(args.synthetic or "64x64x3", work, getattr(args, "score", "recon"))
    if args.what == "items":
        from .bench_items import bench_items

        print(json.dumps(bench_items(bundle, work, args.rate, args.items, args.frame_rate, args.workers), indent=1))
        return 0
    if args.what == "agent" and args.console:
        from .bench_console import bench_console

        print(json.dumps(bench_console(bundle, args), indent=1))
        return 0
    if args.what == "engine":
        r = bench_engine(bundle, ck, args.backend, [int(b) for b in args.batch.split(",")], args.reps, args.threads)
    else:
        r = bench_agent(bundle, args.frames, args.threads, args.alarm_rate, args.spinning, args.rounds, args.max_batch,
                        args.workers, args.paced_fps)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
