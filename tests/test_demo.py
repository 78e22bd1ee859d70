"""``make demo`` (examples/demo.py) leaves what it showed: every alarm's crops and overlay as JPEG
files and an HTML page of them in its output folder, and says where. Run here as the demo runs
(a real mosquitto, the agent as a process, the demo's conveyor video) on a shipped tiny bundle
instead of training one, with a threshold that makes every item alarm."""

import os
import re
import subprocess
import sys

import cv2
import numpy as np

from support.data import ROOT
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR


def test_demo_leaves_crops_overlays_and_a_page_and_says_where(tmp_path):
    out_dir = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "examples.demo", "--dir", str(out_dir), "--items", "8",
                        "--fps", "20", "--bundle", os.path.join(BUNDLE_DIR, "recon"), "--threshold", "-1000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    page = out_dir / "out" / "index.html"
    assert f"all of them on one page: {page}" in r.stdout
    n = int(re.search(r"(\d+) alarms received", r.stdout).group(1))
    assert n >= 1  # every frame over the threshold: the window never clears, one alarm may be all
    html = page.read_text()
    rows = re.findall(r"<tr class=\"(hit|false)\">", html)
    assert len(rows) == n and f"{n} alarms" in html
    srcs = re.findall(r'<img src="([0-9a-f]{32}/(?:overlay|crop-\d+)\.jpg)"', html)
    assert sum(s.endswith("overlay.jpg") for s in srcs) == n and sum("/crop-" in s for s in srcs) >= n
    for src in srcs:
        img = cv2.imdecode(np.fromfile(str(out_dir / "out" / src), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and min(img.shape[:2]) >= 64, src
    assert "broker has stopped" in r.stdout and "ganomaly-agent --config" in r.stdout
