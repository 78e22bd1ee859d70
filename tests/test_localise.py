"""Residual map to boxes, crops and overlay (agent/localise.py)."""

import cv2
import numpy as np
import pytest

from ganomaly_edge.agent.config import LocalisationConfig
from ganomaly_edge.agent.geometry import View
from ganomaly_edge.agent.localise import boxes_in_frame, crops, overlay, regions


def test_localisation_finds_the_planted_region():
    rng = np.random.default_rng(0)
    res = rng.uniform(0, 0.05, (32, 32)).astype(np.float32)
    res[20:26, 5:11] = 0.8
    res[3:5, 25:27] = 0.5
    cfg = LocalisationConfig()
    r = regions(res, cfg)
    (x, y, w, h), s = r[0]
    assert 3 <= x <= 6 and 18 <= y <= 21 and s > 0.3
    view = View(0, 0, 64, 64, 0, 32, 32)
    boxes = boxes_in_frame(res, view, cfg)
    assert boxes[0].x == pytest.approx(2 * x, abs=1) and boxes[0].w >= 10
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    jpgs = crops(frame, boxes, cfg)
    assert len(jpgs) == len(boxes) and cv2.imdecode(np.frombuffer(jpgs[0], np.uint8), cv2.IMREAD_COLOR) is not None
    ov = cv2.imdecode(np.frombuffer(overlay(frame, res, view, boxes, cfg), np.uint8), cv2.IMREAD_COLOR)
    assert ov.shape == (64, 64, 3)


def test_overlay_colour_table_matches_opencv_jet():
    from ganomaly_edge.agent.localise import _JET

    heat = np.random.default_rng(1).integers(0, 256, (40, 52), dtype=np.uint8)
    assert np.array_equal(_JET[heat], cv2.applyColorMap(heat, cv2.COLORMAP_JET))
