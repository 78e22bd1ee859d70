"""The sample of what the line saw ([history] sample_every): the agent as a process on a real
mosquitto and a folder source, the frames it keeps, and ganomaly-calibrate reading them."""

import os
import stat
import subprocess
import sys

import cv2
import numpy as np

from ganomaly_edge.agent.samples import Samples, sample_name
from support.agent import start_agent, stop, wait, write_config
from support.data import ROOT


def _names(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".png"))


def test_the_agent_keeps_one_in_every_n_frames_at_the_working_resolution_and_calibrate_reads_them(
        tiny_bundle, broker, tmp_path):
    from ganomaly_edge.tools.broker import free_port

    http_port = free_port()
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):  # colour 48x48 frames; the ROI is 40x40, the model works at 16x16 grey
        assert cv2.imwrite(str(folder / f"item_{i:03d}.png"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    cfg = write_config(tmp_path / "agent.toml", broker.port,
                       {"kind": "folder", "uri": str(folder), "watch": True, "settle_s": 0},
                       tmp_path / "events.db", bundle=tiny_bundle, camera="cam1", roi="x = 4, y = 4, w = 40, h = 40",
                       sections=f'[history]\npath = "{tmp_path / "history"}"\nsample_every = 3\nsample_keep = 12\n'
                                f'[http]\nlisten = "127.0.0.1:{http_port}"\n')
    log = tmp_path / "agent.log"
    p = start_agent(cfg, log)
    samples = tmp_path / "history" / "samples" / "cam1"
    try:
        # 60 frames, one in 3 kept (20), the newest 12 of them left
        assert wait(lambda: samples.is_dir() and any(int(n.split("-")[2]) == 59 for n in _names(samples)),
                    120), open(log).read()[-3000:]
        # written 20 (one in three of 60), deleted 8 (keep 12), on /metrics
        metrics = wait(lambda: _metrics(http_port), 60, ignore=(OSError,))
        assert 'ganomaly_samples_total{camera="cam1",outcome="written"} 20.0' in metrics, metrics[-2000:]
        assert 'ganomaly_samples_total{camera="cam1",outcome="deleted"} 8.0' in metrics
    finally:
        assert stop(p) == 0, open(log).read()[-3000:]
    names = _names(samples)
    assert len(names) == 12, names
    # every frame alarmed (the test's decision threshold), so every sample says it was above
    assert all(n.endswith("-above.png") for n in names), names
    indices = [int(n.split("-")[2]) for n in names]
    assert indices == list(range(26, 60, 3)), indices  # one in three frames, the newest 12  # one in three frames: 3 frames apart
    for n in names:
        img = cv2.imread(str(samples / n), cv2.IMREAD_UNCHANGED)
        assert img.shape == (16, 16, 3), img.shape  # working resolution, the camera's channels
        assert stat.S_IMODE(os.stat(samples / n).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(samples).st_mode) == 0o700
    # the last sample is the last kept frame's ROI, resized as capture resizes
    last = cv2.imread(str(folder / f"item_{indices[-1]:03d}.png"))
    want = cv2.resize(last[4:44, 4:44], (16, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(cv2.imread(str(samples / names[-1])), want)
    # ganomaly-calibrate takes the folder as it is
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.train.recalibrate", tiny_bundle, "--normal", str(samples),
                        "--far", "0.25", "--out", str(tmp_path / "recal")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "calibrated on 12 normal frame(s)" in r.stdout, r.stdout


def _metrics(port):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return text if 'outcome="written"} 20.0' in text else None


def test_samples_are_pruned_to_keep_across_restarts_and_named_by_time(tmp_path):
    img = np.full((20, 30), 7, np.uint8)
    s = Samples(str(tmp_path), "cam", every=2, keep=3, size=(10, 15))
    for i in range(10):
        s.offer(img, 1_765_000_000.0 + i, i, above=i == 7)
    s.close()
    names = _names(tmp_path / "cam")
    assert names == [sample_name(1_765_000_000.0 + i, i, i == 7) for i in (5, 7, 9)], names
    assert names[1].endswith("-above.png") and not names[0].endswith("-above.png")
    assert s.snapshot()["written"] == 5 and s.snapshot()["deleted"] == 2
    assert cv2.imread(str(tmp_path / "cam" / names[0]), cv2.IMREAD_UNCHANGED).shape == (10, 15)
    # a restart with a smaller keep prunes the oldest at once; a half-written file is removed
    (tmp_path / "cam" / "x.png.tmp").write_bytes(b"partial")
    s2 = Samples(str(tmp_path), "cam", every=2, keep=1, size=(10, 15))
    s2.close()
    assert _names(tmp_path / "cam") == names[-1:]
    assert not (tmp_path / "cam" / "x.png.tmp").exists()


def test_a_16_bit_frame_is_kept_at_16_bits(tmp_path):
    img = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    s = Samples(str(tmp_path), "xray", every=1, keep=5, size=(20, 20))
    s.offer(img, 1_765_000_000.0, 0, above=False)
    s.close()
    (name,) = _names(tmp_path / "xray")
    out = cv2.imread(str(tmp_path / "xray" / name), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (20, 20) and out.max() > 255


def test_a_write_that_fails_is_counted_and_inspection_goes_on(tmp_path):
    s = Samples(str(tmp_path), "cam", every=1, keep=5, size=(8, 8))
    os.chmod(tmp_path / "cam", 0o500)  # no writing: as a full or read-only disk would refuse
    try:
        if os.access(tmp_path / "cam", os.W_OK):  # root with CAP_DAC_OVERRIDE writes anyway
            s.folder = str(tmp_path / "missing" / "cam")
        s.offer(np.zeros((8, 8), np.uint8), 1_765_000_000.0, 0, above=False)
        s.close()
    finally:
        os.chmod(tmp_path / "cam", 0o700)
    assert s.snapshot()["failed"] == 1 and s.snapshot()["written"] == 0
