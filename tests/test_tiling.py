"""Tiles: cutting frames, stitching maps, frame scores (engine/tiling.py), no model needed."""

import numpy as np
import pytest

from ganomaly_edge.engine.tiling import Tiling, TilingError, positions


def test_positions_cover_the_side_and_end_at_the_edge():
    assert positions(300, 64, 32) == [0, 32, 64, 96, 128, 160, 192, 224, 236]
    assert positions(300, 64, 64) == [0, 64, 128, 192, 236]
    assert positions(256, 64, 64) == [0, 64, 128, 192]
    assert positions(64, 64, 64) == [0]
    with pytest.raises(TilingError, match="does not fit"):
        positions(50, 64, 32)


def test_bad_stride_is_refused():
    with pytest.raises(TilingError, match="stride"):
        Tiling(64, 65, 300, 300)
    with pytest.raises(TilingError, match="stride"):
        Tiling(64, 0, 300, 300)


@pytest.mark.parametrize("h,w,c,stride", [(300, 300, 1, 32), (120, 200, 3, 64), (64, 64, 1, 64)])
def test_split_puts_each_tile_where_it_came_from(h, w, c, stride):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, h, w, c), dtype=np.uint8)
    t = Tiling(64, stride, h, w)
    tiles = t.split(frames)
    assert tiles.shape == (2 * t.count, 64, 64, c)
    for n in range(2):
        for k, (y, x) in enumerate(t.origins):
            assert np.array_equal(tiles[n * t.count + k], frames[n, y:y + 64, x:x + 64])


def test_stitching_the_tiles_of_a_map_gives_the_map_back():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 150, 230)).astype(np.float32)
    t = Tiling(64, 40, 150, 230)
    tiles = t.split(maps[..., None])[..., 0]
    assert np.allclose(t.stitch(tiles), maps, atol=1e-6)


def test_overlaps_are_blended_not_overwritten():
    t = Tiling(64, 32, 64, 96)  # two tiles overlapping in columns 32..63
    tiles = np.stack([np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32)])
    out = t.stitch(tiles)[0]
    assert out[:, 0].max() == 0 and out[:, -1].min() == 1
    mid = out[32, 32:64]
    assert np.all(np.diff(mid) >= 0) and 0 < mid[16] < 1  # a ramp from one tile to the other


def test_a_frame_score_is_its_worst_tile():
    t = Tiling(64, 64, 128, 128)  # 4 tiles
    raw = np.array([0, 1, 5, 2, 3, 3, 3, 9], np.float32)
    assert list(t.frame_scores(raw)) == [5, 9]


def test_untiled_is_one_tile_per_frame_and_passes_through():
    t = Tiling.single(64)
    assert t.count == 1 and not t.tiled
    x = np.zeros((5, 64, 64, 3), np.uint8)
    assert t.split(x) is x
    with pytest.raises(TilingError, match="expects"):
        t.split(np.zeros((1, 32, 64, 3), np.uint8))


def test_a_margin_mirrors_the_frame_so_tile_interiors_cover_it():
    t = Tiling(64, 48, 300, 300, margin=8)
    covered = np.zeros((316, 316), bool)
    for y, x in t.origins:
        covered[y + 8:y + 56, x + 8:x + 56] = True
    assert covered[8:308, 8:308].all()  # every frame pixel lies in some tile's scored interior
    frames = np.arange(300 * 300, dtype=np.float32).reshape(1, 300, 300, 1)
    tiles = t.split(frames)
    assert np.allclose(t.stitch(tiles[..., 0]), frames[..., 0])  # the stitch crops the mirror away
    assert np.array_equal(tiles[0, 8:, 8:, 0], frames[0, :56, :56, 0])
    assert np.array_equal(tiles[0, 7, 8:, 0], frames[0, 1, :56, 0])  # mirrored, not padded with zeros


def test_a_stride_that_leaves_gaps_between_interiors_is_refused():
    with pytest.raises(TilingError, match="at most 48"):
        Tiling(64, 64, 300, 300, margin=8)
