"""16-bit images end to end: real 16-bit PNG and TIFF files, ganomaly-train reading them through an
intensity window and recording it in the checkpoint and bundle, the agent reading a scanner folder
at full depth through the bundle's window (real ONNX Runtime, real mosquitto), and crops rendered
through that window. The defect lies 500 raw units above its background: 2 levels in the top 8
bits, 128 levels through the window."""

import os

import cv2
import numpy as np
import pytest

from support.agent import start_agent, write_config
from support.plant import check_results, plant, subscriber, wait

LO, HI = 20000, 21000
SIZE = 32


def smooth(seed):
    """A normal scan: a gentle gradient and a wave, in a 1,000-unit band of the 16-bit range."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a, b, c = r.uniform(-1, 1, 3)
    img = LO + 500 + 150 * (a * xx + b * yy) + 80 * np.sin(2 * np.pi * (xx * r.uniform(0.5, 1.5) + c))
    return img.astype(np.uint16)


def with_defect(img):
    out = img.astype(np.int32)
    out[6:14, 6:14] += 500  # a thin-wire-like object only the full depth shows
    return out.astype(np.uint16)


def write16(path, img):
    assert cv2.imwrite(str(path), img)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, img)  # a real 16-bit file


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two models on the same 16-bit normal scans: one trained through the window, one on the top 8 bits."""
    from ganomaly_edge.train.cli import train_main
    from ganomaly_edge.train.export import checkpoint_to_bundle

    d = tmp_path_factory.mktemp("xray")
    os.makedirs(d / "normal")
    for i in range(400):
        write16(d / "normal" / f"n{i:04d}.{'tif' if i % 2 else 'png'}", smooth(i))
    out = {}
    for name, window in (("window", ["--window", f"{LO}:{HI}"]), ("top8", [])):
        args = ["--data", str(d / "normal"), "--out", str(d / f"{name}.pt"), "--image-size", str(SIZE),
                "--channels", "1", "--width", "16", "--latent-dim", "16", "--epochs", "6", "--score", "peak",
                "--no-augment", "--patience", "0", "--select", "last", "--batch-size", "32", "--threads", "2",
                "--far", "0.01", "--quiet", *window]
        assert train_main(args) == 0
        out[name] = checkpoint_to_bundle(str(d / f"{name}.pt"), str(d / f"bundle-{name}"), name=name).path
    return out


def test_the_window_is_recorded_in_checkpoint_and_bundle_and_older_bundles_load(bundles, tiny_bundle):
    import torch

    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.engine.window import Window

    assert open_bundle(bundles["window"]).window == Window(lo=LO, hi=HI)
    assert open_bundle(bundles["top8"]).window is None
    assert open_bundle(tiny_bundle).window is None  # a bundle from before windows
    ck = torch.load(os.path.join(os.path.dirname(bundles["window"]), "window.pt"), weights_only=False)
    assert ck["config"]["window"] == f"{LO}:{HI}"


def scans(folder):
    """9 unseen scans in name order, PNG and TIFF: every third one with the defect."""
    os.makedirs(folder)
    names, defects = [], []
    for i in range(9):
        img = smooth(1000 + i)
        name = f"scan_{i:02d}.{'tiff' if i % 2 else 'png'}"
        if i % 3 == 1:
            img = with_defect(img)
            defects.append(name)
        write16(os.path.join(folder, name), img)
        names.append(name)
    return names, defects


def run_folder(bundle, port, tmp_path, tag):
    folder = tmp_path / f"scans-{tag}"
    names, defects = scans(str(folder))
    cfg = write_config(tmp_path / f"{tag}.toml", port, {"kind": "folder", "uri": str(folder), "watch": False},
                       tmp_path / f"{tag}.db", **plant(bundle=bundle, camera=f"xray-{tag}"))
    sub = subscriber(port, client_id=f"sub-{tag}")
    p = start_agent(cfg, tmp_path / f"{tag}.log")
    assert p.wait(180) == 0, open(tmp_path / f"{tag}.log").read()
    assert wait(lambda: len(sub.results()) >= len(names), 60)
    got = sub.results()
    check_results(got)
    assert [r["item"] for r in got] == names
    return sub, {r["item"]: r for r in got}, defects


pytestmark = pytest.mark.slow


def test_a_defect_above_the_8_bit_range_is_caught_through_the_window_and_missed_without(bundles, broker, tmp_path):
    sub, res, defects = run_folder(bundles["window"], broker.port, tmp_path, "window")
    assert all(res[n]["score"] > res[n]["threshold"] and not res[n]["ok"] for n in defects), res
    assert sum(r["ok"] for n, r in res.items() if n not in defects) >= 5  # of 6 normal scans
    # The crops are rendered through the same window: the defect stands out in them.
    with sub.lock:
        crops = [p for t, p, _ in sub.msgs if "/crop/" in t]
    assert crops
    crop = cv2.imdecode(np.frombuffer(crops[0], np.uint8), cv2.IMREAD_GRAYSCALE)
    assert int(crop.max()) - int(crop.min()) > 100
    sub.close()

    sub, res, defects = run_folder(bundles["top8"], broker.port, tmp_path, "top8")
    assert all(res[n]["score"] < res[n]["threshold"] and res[n]["ok"] for n in defects), res
    sub.close()


def test_windows():
    from ganomaly_edge.engine.window import Window, WindowError, to_8bit

    w = Window.parse("20000:21000")
    img = np.array([[19000, 20000, 20500, 21000, 60000]], np.uint16)
    assert w.apply(img).tolist() == [[0, 0, 128, 255, 255]]
    assert to_8bit(img, None).tolist() == [[74, 78, 80, 82, 234]]  # the top 8 bits
    p = Window.parse("p0:p100")
    assert p.apply(img)[0, 0] == 0 and p.apply(img)[0, -1] == 255
    assert Window.from_meta(w.as_meta()) == w and Window.parse(p.text()) == p
    for bad in ("20000", "a:b", "21000:20000", "p5:p200"):
        with pytest.raises(WindowError):
            Window.parse(bad)
    u8 = np.array([[1, 2]], np.uint8)
    assert w.apply(u8) is u8  # 8-bit frames pass unchanged


def test_training_reads_16_bit_files_through_the_window(tmp_path):
    from ganomaly_edge.engine.preprocess import read_image
    from ganomaly_edge.engine.window import Window

    plain = smooth(7)
    for ext in ("png", "tif"):
        write16(tmp_path / f"plain.{ext}", plain)
        write16(tmp_path / f"defect.{ext}", with_defect(plain))
        windowed = [read_image(str(tmp_path / f"{n}.{ext}"), 1, Window(lo=LO, hi=HI))[10, 10, 0] for n in
                    ("plain", "defect")]
        top8 = [read_image(str(tmp_path / f"{n}.{ext}"), 1)[10, 10, 0] for n in ("plain", "defect")]
        assert int(windowed[1]) - int(windowed[0]) > 100  # the defect, through the window
        assert int(top8[1]) - int(top8[0]) <= 2  # barely there in the top 8 bits
