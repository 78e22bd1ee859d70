"""The device profile: a venv made the way deploy/install.sh makes it on a Jetson (JetPack 6), with the
fake TensorRT and pycuda injected, and the first commands a user runs there.

What JetPack 6 gives (shared facts, deploy/JETSON.md): Python 3.10, numpy 1.21.5 and OpenCV 4.x in
the system Python, TensorRT, and no onnx, no onnxruntime. Here: pyenv's Python 3.10 stands for the
system Python; numpy 1.21.5 and OpenCV 4.10 (PyPI's opencv-python-headless; 4.8's wheel does not
import with numpy 1.21, JetPack's own build does) are installed into a folder that the venv sees
after its own site-packages, where a ``--system-site-packages`` venv sees /usr/lib/python3/dist-packages.
That folder and pip's downloads are cached under .device-profile/ (gitignored). The venv is made
before install.sh runs (its system site can only be added that way); install.sh then runs its
Jetson branch, found by the scratch root's /etc/nv_tegra_release, exactly as on a device. No dev or
train extras: no torch, no pytest in the venv.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from support.data import ROOT
from support.deploy import INSTALL, find_python, scratch_root

pytestmark = pytest.mark.slow

CACHE = os.path.join(ROOT, ".device-profile")
JETPACK = {"numpy": "1.21.5", "opencv-python-headless": "4.10.0.84"}  # JetPack 6's numpy; an OpenCV 4.x
L4T_RELEASE = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n"
FAKES = os.path.join(ROOT, "tests", "device_fakes")


def jetpack_site(py):
    """numpy and OpenCV as JetPack's system Python has them (built once, then cached)."""
    key = json.dumps(JETPACK, sort_keys=True)
    site = os.path.join(CACHE, "jetpack-site")
    stamp = os.path.join(site, ".versions")
    if os.path.exists(stamp) and open(stamp).read() == key:
        return site
    shutil.rmtree(site, ignore_errors=True)
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", site,
                        *[f"{k}=={v}" for k, v in JETPACK.items()]], capture_output=True, text=True,
                       env=pip_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    open(stamp, "w").write(key)
    return site


def pip_env(**extra):
    return dict(os.environ, PIP_CACHE_DIR=os.path.join(CACHE, "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1",
                **extra)


@pytest.fixture(scope="session")
def device():
    """The scratch root after deploy/install.sh's Jetson branch: (root, venv, log)."""
    py = find_python("3.10")
    assert py, "python3.10 is not installed: the device profile needs it (pyenv install 3.10)"
    os.makedirs(CACHE, exist_ok=True)
    site = jetpack_site(py)
    root = scratch_root()
    open(os.path.join(root, "etc", "nv_tegra_release"), "w").write(L4T_RELEASE)
    venv = os.path.join(root, "opt", "ganomaly-edge", "venv")
    subprocess.run([py, "-m", "venv", "--system-site-packages", venv], check=True)
    open(os.path.join(venv, "lib", "python3.10", "site-packages", "jetpack-dist-packages.pth"), "w").write(site + "\n")
    r = subprocess.run(["bash", INSTALL, "--root", root, "--python", py], cwd=ROOT, capture_output=True, text=True,
                       env=pip_env(), timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    yield root, venv, r.stdout
    shutil.rmtree(root, ignore_errors=True)


def run(venv, *args, fakes=None, timeout=600, cwd=None):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if fakes:
        env.update(PYTHONPATH=FAKES, FAKE_TRT_SERIES=fakes)
    exe = args[0] if os.path.isabs(args[0]) else os.path.join(venv, "bin", args[0])
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def test_jetson_install_keeps_jetpacks_numpy_and_opencv_and_adds_onnx_and_onnxruntime(device):
    root, venv, log = device
    assert "L4T (Jetson) detected" in log
    r = run(venv, "python", "-c", "import json, sys, numpy, cv2, onnx, onnxruntime\n"
            "print(json.dumps({m.__name__: [m.__version__, m.__file__] for m in (numpy, cv2, onnx, onnxruntime)}))")
    assert r.returncode == 0, r.stderr
    mods = json.loads(r.stdout)
    site = os.path.join(CACHE, "jetpack-site")
    assert mods["numpy"][0] == JETPACK["numpy"] and mods["numpy"][1].startswith(site)  # never shadowed
    assert mods["cv2"][1].startswith(site)
    assert mods["onnx"][1].startswith(venv) and mods["onnxruntime"][1].startswith(venv)
    r = run(venv, "python", "-c", "import importlib.util as u; print([m for m in ('torch', 'pytest', 'sklearn') if u.find_spec(m)])")
    assert r.stdout.strip() == "[]", r.stdout  # no dev or train extras on the device


def test_self_check_prints_its_whole_report_and_exits_3_without_tensorrt(device):
    root, venv, _ = device
    r = run(venv, "ganomaly-build-engine", "--self-check", "--reps", "3", "--cycles", "0")
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    out = r.stdout
    assert out.startswith("==== ganomaly-edge self-check ====") and out.rstrip().endswith("==== end ====")
    for row in ("ganomaly-edge", "platform", "power mode", "libraries", "onnxruntime", "gpu", "speed", "result"):
        assert any(line.startswith(row + " ") for line in out.splitlines()), (row, out)
    assert "numpy 1.21.5" in out and "Python 3.10" in out and "TensorRT absent" in out
    assert "INCOMPLETE: TensorRT is not installed" in out and "FAIL" not in out


def test_self_check_with_the_fake_tensorrt_builds_and_measures_the_deployed_recipe(device):
    root, venv, _ = device
    r = run(venv, "ganomaly-build-engine", "--self-check", "--reps", "3", "--cycles", "2", fakes="10.3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = {line.split("  ", 1)[0]: line for line in r.stdout.splitlines()}
    assert "PASS" in lines["result"] and "fp16" in lines["trt tiled"]
    assert "2 frames (98 tiles) per call: fp32 " in lines["tiled"] and "device memory fp32 " in lines["tiled"]
    assert "0 core(s)" in lines["dla"] and "power mode" in lines


@pytest.mark.parametrize("series", ["8.6", "10.3"])
def test_build_engine_makes_fp32_and_fp16_plans_from_a_shipped_bundle(device, series, tmp_path):
    """JetPack 6.0 (TensorRT 8.6) and 6.1/6.2 (10.3), with the fake TensorRT and pycuda in the device venv."""
    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

    root, venv, _ = device
    bundle = str(tmp_path / "bundle")
    shutil.copytree(os.path.join(BUNDLE_DIR, "knn"), bundle)
    for precision in ("fp32", "fp16"):
        r = run(venv, "ganomaly-build-engine", bundle, "--out", bundle, "--precision", precision, "--max-batch", "4",
                "--quiet", fakes=series, cwd=str(tmp_path))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"{precision} plan for Orin (sm 8.7)" in r.stdout
    plans = json.load(open(os.path.join(bundle, "bundle.json")))["plans"]
    assert {p["precision"] for p in plans} == {"fp32", "fp16"}
    assert all(p["compute_capability"] == "8.7" for p in plans)


def test_agent_scores_a_video_and_publishes_to_mosquitto(device, tmp_path):
    import cv2
    import numpy as np

    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR
    from ganomaly_edge.tools.broker import Mosquitto
    from support.agent import Subscriber

    root, venv, _ = device
    video = str(tmp_path / "line.avi")
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(12):
        w.write(np.full((48, 64, 3), 20 * i, np.uint8))
    w.release()
    with Mosquitto(workdir=str(tmp_path / "broker")) as broker:
        sub = Subscriber(broker.port, prefix="ganomaly/jetson", client_id="device-profile")
        cfg = tmp_path / "agent.toml"
        cfg.write_text(f'device_id = "jetson"\n[model]\nbundle = "{BUNDLE_DIR}/recon"\n'
                       f'[mqtt]\nport = {broker.port}\n[store]\npath = "{tmp_path}/events.db"\n'
                       f'[[cameras]]\nname = "line"\n[cameras.source]\nkind = "file"\nuri = "{video}"\n')
        try:
            r = run(venv, "ganomaly-agent", "--config", str(cfg), "--flush-timeout", "5", timeout=300)
            assert r.returncode == 0, r.stderr[-4000:]
            assert "source finished after 12 frames" in r.stderr and "all sources finished" in r.stderr
            assert sub.wait(lambda: sub.last("ganomaly/jetson/available") == "offline", 10)
            assert sub.last("ganomaly/jetson/available/reason") == "all sources finished"
            stats = [json.loads(p) for _, p in sub.topics("/stats")]
            assert stats and stats[-1]["cameras"]["line"]["frames_processed"] == 12
        finally:
            sub.close()


def test_gpu_is_refused_on_a_jetson_before_anything_changes(tmp_path):
    """--gpu installs PyPI's onnxruntime-gpu, an x86-64 build: a Jetson needs NVIDIA's own wheel."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(L4T_RELEASE)
    r = subprocess.run(["bash", INSTALL, "--root", str(root), "--gpu"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "--gpu is for x86-64 hosts" in r.stderr and "Jetson Zoo" in r.stderr
    assert not (root / "opt").exists()
