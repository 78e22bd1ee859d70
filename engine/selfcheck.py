"""On-device acceptance check: ``ganomaly-build-engine --self-check``.

Run it once on a new device (a Jetson, a GPU server) before deploying. It needs no torch and no
model of yours: tiny bundles ship in the package, one per score component. It reports the
platform (L4T/JetPack, TensorRT, CUDA, pycuda, OpenCV and whether it has GStreamer, ONNX
Runtime), builds fp32 and fp16 plans of every bundle and checks them against the bundle's
reference outputs, runs load/infer/close cycles from a worker thread watching device and pinned
memory, times batch-1 latency and batch-8 throughput for fp32, fp16 and ONNX Runtime, and
prints one summary block to paste into a bug report.

Exit status: 0 all passed; 1 a check failed; 3 TensorRT or a CUDA GPU is absent (the ONNX
Runtime checks still ran).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .meta import COMPONENTS

# One tiny bundle per score component (research/make_selfcheck_bundles.py), and "tiled": what users
# deploy, ganomaly-train --tile 64 with its defaults at 300 x 300 (49 tiles a frame), made by
# research/selfcheck_tiled.py; "int8": the peak bundle quantised (engine/int8.py): ONNX Runtime's
# self-test and TensorRT's int8 build.
TILED, INT8 = "tiled", "int8"
HEADS = COMPONENTS + (TILED, INT8)
TILED_FRAMES = 2  # frames per call on a Jetson (deploy/JETSON.md): a 98-tile profile
BUNDLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "selfcheck-bundles")
EXIT_OK, EXIT_FAILED, EXIT_NO_TENSORRT = 0, 1, 3
# L4T release -> JetPack (deploy/JETSON.md)
JETPACK = {"35": "5.1.x", "36.2": "6.0", "36.3": "6.0", "36.4": "6.1/6.2"}
CYCLE_MEMORY_SLACK = 64 << 20  # device memory may move this much for reasons of the driver's own


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    missing: str | None = None

    def add(self, key: str, value: str) -> None:
        self.rows.append((key, value))

    def fail(self, what: str) -> None:
        self.failures.append(what)

    def text(self) -> str:
        verdict = ("FAIL: " + "; ".join(self.failures) if self.failures
                   else f"INCOMPLETE: {self.missing}" if self.missing else "PASS")
        width = max(len(k) for k, _ in self.rows) if self.rows else 8
        body = "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows)
        return f"==== ganomaly-edge self-check ====\n{body}\n{'result':<{width}}  {verdict}\n==== end ===="


def l4t_release(path: str = "/etc/nv_tegra_release") -> str | None:
    """'36.4.0' from '# R36 (release), REVISION: 4.0, ...'; None off a Jetson."""
    try:
        head = open(path).readline()
    except OSError:
        return None
    try:
        major = head.split("R", 1)[1].split(" ", 1)[0]
        rev = head.split("REVISION:", 1)[1].split(",", 1)[0].strip()
    except IndexError:
        return head.strip() or None
    return f"{major}.{rev}"


def _module_version(name: str) -> str:
    try:
        mod = __import__(name)
    except Exception as e:  # an import that fails on a broken install says why
        return f"absent ({type(e).__name__}: {str(e)[:60]})"
    return str(getattr(mod, "__version__", getattr(mod, "VERSION", "?")))


def _opencv() -> str:
    try:
        import cv2
    except Exception as e:  # the agent cannot capture without it: reported, never a traceback
        return f"OpenCV absent ({type(e).__name__}: {str(e)[:60]})"
    gst = "YES" if any(ln.strip().startswith("GStreamer:") and "YES" in ln
                       for ln in cv2.getBuildInformation().splitlines()) else "NO"
    return f"OpenCV {cv2.__version__} (GStreamer: {gst})"


def _onnxruntime() -> tuple[str, bool]:
    try:
        import onnxruntime as ort
    except Exception as e:
        return f"ONNX Runtime absent ({type(e).__name__}: {str(e)[:60]})", False
    return f"ONNX Runtime {ort.__version__} ({', '.join(ort.get_available_providers())})", True


def power_mode(run=subprocess.run) -> str:
    """``nvpmodel -q``'s mode ("MAXN (0)"), or why there is none: the GPU clock, and so every
    figure below, depends on it."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return "unknown (nvpmodel not found: not a Jetson, or JetPack's nvpmodel is not installed)"
    try:
        r = run([exe, "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown (nvpmodel -q failed: {e})"
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    mode = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("NV Power Mode")), None)
    number = next((ln for ln in lines if ln.isdigit()), None)
    if mode is None:
        return f"unknown (nvpmodel -q said: {(r.stdout + r.stderr).strip()[:80]})"
    return f"{mode} ({number})" if number else mode


def platform_rows(report: Report) -> bool:
    """Platform and library rows; True when ONNX Runtime (the CPU fallback) imports."""
    from .version import version

    l4t = l4t_release()
    jp = next((v for k, v in JETPACK.items() if l4t and l4t.startswith(k)), None)
    ort_text, have_ort = _onnxruntime()
    report.add("ganomaly-edge", f"{version()} | Python {platform.python_version()} | numpy {np.__version__} | "
                                f"{platform.machine()}")
    report.add("platform", f"L4T {l4t} (JetPack {jp or '?'})" if l4t else f"not a Jetson ({platform.platform()})")
    report.add("power mode", power_mode() if l4t else "n/a (not a Jetson)")
    report.add("libraries", f"TensorRT {_module_version('tensorrt')} | pycuda {_module_version('pycuda')} | "
                            f"onnx {_module_version('onnx')} | {_opencv()} | {ort_text}")
    if not have_ort:
        from .backends.onnxruntime import ORT_MISSING

        report.fail(f"{ORT_MISSING}; without it model.backend = \"auto\" has no CPU fallback")
    return have_ort


def gpu_rows(report: Report):
    """The CUDA device, or None with ``report.missing`` set."""
    from .loader import tensorrt_status

    trt_version, gpu, reason = tensorrt_status()
    if gpu is None:
        report.missing = reason
        report.add("gpu", f"none usable: {reason}")
        return None
    from .cuda import device

    dev = device(0)
    free, total = dev.memory()
    vers = dev.versions()
    report.add("gpu", f"{gpu} (sm {dev.compute_capability()}), {free / 2**30:.2f} of {total / 2**30:.2f} GiB free, "
                      f"CUDA driver {vers['cuda_driver']}")
    try:
        from .trt_build import dla_cores

        n = dla_cores()
        report.add("dla", f"{n} core(s)" + (": ganomaly-build-engine --dla 0 builds for one, with GPU fallback"
                                            if n else " (none on this device: no --dla)"))
    except Exception as e:  # informative only
        report.add("dla", f"unknown ({str(e)[:80]})")
    return dev


def shipped_bundles() -> list[str]:
    return [os.path.join(BUNDLE_DIR, h) for h in HEADS if os.path.isdir(os.path.join(BUNDLE_DIR, h))]


def onnxruntime_parity(report: Report, bundles: list[str]) -> None:
    from . import load

    cells = []
    for path in bundles:
        try:
            eng = load(path, "onnxruntime", self_test=True)
            cells.append(f"{os.path.basename(path)} {eng.selftest_report['max_score_diff_calibrated']:.2g}")
            eng.close()
        except Exception as e:  # each bundle is reported, whatever goes wrong
            report.fail(f"ONNX Runtime self-test of {os.path.basename(path)}: {e}")
            cells.append(f"{os.path.basename(path)} FAIL")
    report.add("onnxruntime", "parity (calibrated units): " + ", ".join(cells))


def tensorrt_parity(report: Report, bundles: list[str], work: str) -> list[str]:
    """Build fp32 and fp16 plans of every bundle (int8 ones of an INT8 bundle) into copies under
    ``work``; returns the copies."""
    from .bundle import open_bundle
    from .trt_build import BuildOptions, build_into_bundle

    built = []
    for path in bundles:
        head = os.path.basename(path)
        dst = os.path.join(work, head)
        shutil.copytree(path, dst)
        cells = []
        for precision in ("int8",) if open_bundle(dst).precision == "int8" else ("fp32", "fp16"):
            try:
                frames = TILED_FRAMES if head == TILED else 8
                entry = build_into_bundle(open_bundle(dst), BuildOptions(precision=precision, max_batch=frames,
                                                                         progress=False))
                cells.append(f"{precision} {entry.parity['max_score_diff_calibrated']:.2g}")
            except Exception as e:  # a refused build is the finding
                report.fail(f"TensorRT {precision} build of {head}: {e}")
                cells.append(f"{precision} FAIL")
        report.add(f"trt {head}", "parity (calibrated units): " + ", ".join(cells))
        built.append(dst)
    return built


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def load_cycles(report: Report, bundle: str, dev, cycles: int) -> None:
    """``cycles`` x (load, infer, close) of the fp16 plan from a worker thread; memory must come back."""
    from . import load, open_bundle

    x = open_bundle(bundle).reference()["inputs"][:2]
    errors: list[BaseException] = []
    before = (dev.memory()[0], dev.pinned_bytes, _rss_mb())

    def work() -> None:
        try:
            for _ in range(cycles):
                eng = load(bundle, "tensorrt", precision="fp16", self_test=False)
                eng.infer(x)
                eng.close()
        except BaseException as e:  # reported in the summary
            errors.append(e)

    t = threading.Thread(target=work, name="selfcheck-cycles")
    t.start()
    t.join()
    after = (dev.memory()[0], dev.pinned_bytes, _rss_mb())
    report.add("cycles", f"{cycles} load/infer/close from a worker thread: device free {before[0] / 2**20:.0f} -> "
                         f"{after[0] / 2**20:.0f} MiB, pinned {before[1]} -> {after[1]} B, RSS {before[2]:.0f} -> "
                         f"{after[2]:.0f} MB")
    if errors:
        report.fail(f"load/infer/close cycles: {errors[0]}")
    if after[1] != before[1]:
        report.fail(f"pinned host memory not freed: {after[1] - before[1]} B left after {cycles} cycles")
    if before[0] - after[0] > CYCLE_MEMORY_SLACK:
        report.fail(f"device memory fell by {(before[0] - after[0]) / 2**20:.0f} MiB over {cycles} cycles")


def _timing(eng, reps: int) -> str:
    h, w, c = eng.spec.shape
    rng = np.random.default_rng(0)
    x1 = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
    x8 = rng.integers(0, 256, (min(8, eng.max_batch or 8), h, w, c), dtype=np.uint8)

    def med(x, n):
        eng.infer(x)
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            eng.infer(x)
            t.append(time.perf_counter() - t0)
        return float(np.median(t))

    return f"b1 {1000 * med(x1, reps):.2f} ms, b{len(x8)} {len(x8) / med(x8, max(reps // 4, 5)):.0f} img/s"


def speed(report: Report, bundle: str, reps: int, with_trt: bool) -> None:
    from . import load

    cells = []
    backends = [("fp32", "tensorrt", "fp32"), ("fp16", "tensorrt", "fp16")] if with_trt else []
    for label, backend, precision in backends + [("onnxruntime", "onnxruntime", None)]:
        try:
            eng = load(bundle, backend, precision=precision, self_test=False)
            cells.append(f"{label} {_timing(eng, reps)}")
            eng.close()
        except Exception as e:  # timing is informative; a failure to load is already reported
            cells.append(f"{label} unavailable ({str(e)[:60]})")
    from .bundle import open_bundle

    h, w, c = open_bundle(bundle).input.shape
    report.add("speed", f"{os.path.basename(bundle.rstrip('/'))} {h}x{w}x{c}: " + " | ".join(cells))


def tiled_rows(report: Report, bundle: str, dev, reps: int, with_trt: bool) -> None:
    """The deployed recipe at the deployed batch: latency of a call of TILED_FRAMES frames (98 tiles)
    per backend, and the device memory a TensorRT engine of it takes once it has run that batch."""
    from . import load, open_bundle

    b = open_bundle(bundle)
    t = b.tiling
    x = np.random.default_rng(0).integers(0, 256, (TILED_FRAMES, t.height, t.width, b.input.channels), dtype=np.uint8)
    cells, memory = [], []
    backends = [("fp32", "tensorrt", "fp32"), ("fp16", "tensorrt", "fp16")] if with_trt else []
    for label, backend, precision in backends + [("onnxruntime", "onnxruntime", None)]:
        try:
            free0 = dev.memory()[0] if backend == "tensorrt" else None
            eng = load(bundle, backend, precision=precision, self_test=False)
            try:
                eng.score_frames(x)
                if free0 is not None:  # after the largest call, what the engine holds is its peak
                    memory.append(f"{label} {(free0 - dev.memory()[0]) / 2**20:.1f} MiB")
                times = []
                for _ in range(max(reps // 10, 3)):
                    t0 = time.perf_counter()
                    eng.score_frames(x)
                    times.append(time.perf_counter() - t0)
                cells.append(f"{label} {1000 * float(np.median(times)):.1f} ms")
            finally:
                eng.close()
        except Exception as e:  # a refused build is already a failure above; this row informs
            cells.append(f"{label} unavailable ({str(e)[:60]})")
    report.add("tiled", f"{t.width}x{t.height} in {t.count} tiles of {t.tile} px ({b.meta.score.name}): "
                        f"{TILED_FRAMES} frames ({TILED_FRAMES * t.count} tiles) per call: " + " | ".join(cells)
               + (f"; device memory {', '.join(memory)}" if memory else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ganomaly-build-engine --self-check", description=__doc__.replace("``", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=100, help="load/infer/close cycles (default 100)")
    ap.add_argument("--reps", type=int, default=200, help="timed runs per figure")
    ap.add_argument("--bundle", help="also time this bundle of yours (default: the shipped recon bundle)")
    args = ap.parse_args(argv)
    report = Report()
    have_ort = platform_rows(report)
    bundles = shipped_bundles()
    if len(bundles) != len(HEADS):
        report.fail(f"shipped bundles missing under {BUNDLE_DIR} (found {len(bundles)} of {len(HEADS)})")
    if have_ort:
        onnxruntime_parity(report, bundles)
    else:
        report.add("onnxruntime", "not run: ONNX Runtime is absent")
    dev = gpu_rows(report)
    with tempfile.TemporaryDirectory(prefix="ganomaly-selfcheck-") as work:
        built = tensorrt_parity(report, bundles, work) if dev is not None else []
        recon = next((b for b in built if b.endswith("recon")), None)
        if recon and args.cycles:
            load_cycles(report, recon, dev, args.cycles)
        tiled = next((b for b in built if b.endswith(TILED)), os.path.join(BUNDLE_DIR, TILED))
        if have_ort or built:
            tiled_rows(report, tiled, dev, args.reps, with_trt=tiled in built)
        timed = args.bundle or recon or os.path.join(BUNDLE_DIR, "recon")
        speed(report, timed, args.reps, with_trt=dev is not None and (args.bundle is None or bool(built)))
    print(report.text(), flush=True)
    if report.failures:
        return EXIT_FAILED
    return EXIT_NO_TENSORRT if report.missing else EXIT_OK
