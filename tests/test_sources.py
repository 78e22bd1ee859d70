"""A folder source run again over the same folder (agent/sources.py): it says how many images were
processed before and how to have them inspected again, instead of a bare "finished after 0 frames".
The agent as a process, a real mosquitto, real PNG files, one event store across the runs."""

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import ROOT
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR


@pytest.fixture
def broker(tmp_path):
    from ganomaly_edge.tools.broker import Mosquitto

    b = Mosquitto(workdir=str(tmp_path / "broker")).start()
    yield b
    b.stop()


def _run(tmp_path, port, scans, n):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""device_id = "rerun"
[model]
bundle = "{os.path.join(BUNDLE_DIR, 'recon')}"
threads = 1
[mqtt]
port = {port}
discovery = false
[store]
path = "{tmp_path / 'ev.db'}"
[[cameras]]
name = "scanner"
source = {{ kind = "folder", uri = "{scans}", watch = false }}
decision = {{ threshold = 1000.0 }}
""")
    log = tmp_path / f"agent{n}.log"
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", str(cfg)], cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=open(log, "w"), timeout=180)
    assert r.returncode == 0, log.read_text()
    return log.read_text()


def test_a_rerun_says_what_was_processed_before_and_how_to_reprocess(broker, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        cv2.imwrite(str(scans / f"scan{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    first = _run(tmp_path, broker.port, scans, 1)
    assert "already processed" not in first and "source finished after 3 frames" in first
    second = _run(tmp_path, broker.port, scans, 2)
    assert "3 image(s) were already processed" in second and "0 new" in second, second
    assert "WARNING" in second.split("were already processed")[0].splitlines()[-1]  # nothing new: loud
    assert "touch it" in second
    t = time.time() + 5
    os.utime(scans / "scan1.png", (t, t))  # what the message says to do
    third = _run(tmp_path, broker.port, scans, 3)
    assert "2 image(s) were already processed" in third and "1 new" in third, third
    assert "source finished after 1 frames" in third
