"""Residual map to boxes, crops and overlay (agent/localise.py).

Crops and the overlay (agent/localise.py) as a person looks at them: a crop of a small box has a
minimum size and shows the box's surroundings; the overlay leaves the frame as the camera saw it
and outlines each box clearly, instead of tinting the whole frame."""

import cv2
import numpy as np
import pytest

from ganomaly_edge.agent.config import LocalisationConfig
from ganomaly_edge.agent.geometry import View
from ganomaly_edge.agent.localise import BOX_COLOUR, Box, boxes_in_frame, crop_region, crops, overlay, regions


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


def _decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _scene(h=480, w=640):
    """A grey gradient frame with a 7x7 green defect at (300, 200)."""
    frame = np.tile(np.linspace(40, 200, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
    frame[200:207, 300:307] = (0, 255, 0)
    return frame


def test_a_small_box_gets_a_crop_of_the_minimum_size_centred_on_it():
    cfg = LocalisationConfig()
    frame = _scene()
    box = Box(300, 200, 7, 7, 0.5)
    (jpg,) = crops(frame, [box], cfg)
    crop = _decode(jpg)
    assert min(crop.shape[:2]) >= cfg.min_crop_px  # not 7x7
    cy, cx = crop.shape[0] // 2, crop.shape[1] // 2
    assert crop[cy, cx, 1] > 200 and crop[cy, cx, 0] < 60  # the defect in the middle...
    assert (crop[:, :, 1] > 200).mean() < 0.02  # ...with its surroundings around it
    x0, y0, x1, y1 = crop_region(box, 640, 480, cfg)
    assert np.abs(crop.astype(int) - frame[y0:y1, x0:x1].astype(int)).mean() < 4  # original pixels


def test_a_box_at_the_edge_keeps_the_size_inside_the_frame_and_a_small_frame_is_enlarged():
    cfg = LocalisationConfig(min_crop_px=128)
    assert crop_region(Box(0, 470, 5, 5, 0.1), 640, 480, cfg) == (0, 352, 128, 480)
    small = np.full((64, 64, 3), 90, np.uint8)
    (jpg,) = crops(small, [Box(30, 30, 3, 3, 0.2)], cfg)
    assert _decode(jpg).shape[:2] == (128, 128)  # a 64 px frame, enlarged pixel by pixel
    big = LocalisationConfig(min_crop_px=96, max_crop_px=64)
    assert 60 <= max(_decode(crops(_scene(), [Box(100, 100, 300, 200, 0.3)], big)[0]).shape[:2]) <= 64


def test_overlay_outlines_the_boxes_and_leaves_the_rest_of_the_frame_as_it_was():
    cfg = LocalisationConfig(jpeg_quality=95)
    frame = _scene()
    residual = np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32)  # heat everywhere
    box = Box(280, 180, 48, 48, 0.5)
    ov = _decode(overlay(frame, residual, View(0, 0, 640, 480, 0, 32, 32), [box], cfg)).astype(int)
    assert ov.shape == frame.shape
    away = np.ones(frame.shape[:2], bool)
    away[150:260, 250:360] = False  # the box, its outline and its number
    assert np.abs(ov[away] - frame[away].astype(int)).mean() < 3  # no tint over the frame
    edge = ov[box.y + box.h // 2, box.x - 1]  # on the box's left edge
    assert edge[2] > 180 and edge[1] < 80 and edge[0] < 80, edge  # red
    inside = ov[box.y + 5:box.y + box.h - 5, box.x + 5:box.x + box.w - 5]
    assert np.abs(inside - frame[box.y + 5:box.y + box.h - 5, box.x + 5:box.x + box.w - 5]).mean() > 10  # heat
    assert BOX_COLOUR == (0, 0, 255)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_a_box_at_the_edge_of_the_map_stays_inside_the_frame_at_every_rotation(rotate):
    """The box an alarm gets around the strongest response, when no region stands out, was 3 x 3 even
    at the map's last row: past the frame after rotation (y = -10), an event the schema refuses, an
    alarm lost."""
    from ganomaly_edge.agent.alarm import Box as EventBox

    cfg = LocalisationConfig()
    res = np.zeros((16, 16), np.float32)
    res[15, 15] = 1.0  # the corner
    (x, y, w, h), _ = regions(res, cfg)[0]
    assert 0 <= x and 0 <= y and x + w <= 16 and y + h <= 16
    rng = np.random.default_rng(0)
    for _ in range(200):
        noise = rng.uniform(0, 1, (16, 16)).astype(np.float32) ** 4
        for b in boxes_in_frame(noise, View(0, 0, 160, 120, rotate, 16, 16), cfg):
            assert 0 <= b.x and 0 <= b.y and b.x + b.w <= 160 and b.y + b.h <= 120, b
            EventBox(**b.as_dict())  # the event's own validation
