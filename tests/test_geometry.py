"""ROI, rotation and resize, and boxes mapped back to the frame (agent/geometry.py)."""

import numpy as np
import pytest

from ganomaly_edge.agent.config import RoiConfig
from ganomaly_edge.agent.geometry import model_input


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_boxes_map_back_through_roi_rotation_and_resize(rotate):
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[50:60, 70:90] = 255  # the "defect" in frame coordinates
    roi = RoiConfig(x=40, y=20, w=100, h=80)
    x, view = model_input(frame, roi, rotate, 32, 1)
    ys, xs = np.nonzero(x[..., 0] > 60)
    box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    X, Y, W, H = view.to_frame(box)
    assert abs(X - 70) <= 4 and abs(Y - 50) <= 4 and abs(X + W - 90) <= 4 and abs(Y + H - 60) <= 4


def test_roi_outside_frame_is_a_clear_error():
    from ganomaly_edge.agent.geometry import FrameSizeError

    with pytest.raises(FrameSizeError, match="does not fit a 50x50 frame"):
        model_input(np.zeros((50, 50, 3), np.uint8), RoiConfig(x=10, y=10, w=64, h=64), 0, 32, 3)
