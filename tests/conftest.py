"""Fixtures every test module may ask for by name; helper functions live in tests/support/."""

import os

import pytest

from support.data import calibration_folder, digits_u8, make_checkpoint
from support.outside import expose

# examples/ and research/ ship in no wheel: tests import them from the repository
expose()


@pytest.fixture(scope="session")
def digits():
    return digits_u8(16)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    # Plumbing, not detection quality: the image-wide residual suits a model this small.
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_bundle_src(tiny_checkpoint, tmp_path_factory):
    from ganomaly_edge.train.export import checkpoint_to_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    checkpoint_to_bundle(tiny_checkpoint, str(out))
    return str(out)


@pytest.fixture
def tiny_bundle(tiny_bundle_src, tmp_path):
    """A fresh copy per test, so tests may damage it."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_src, dst)
    return str(dst)


@pytest.fixture(scope="session", autouse=True)
def every_exported_graph_passes_the_tensorrt_check():
    """Every bundle any test exports must be one TensorRT would build, on every supported series,
    for fp32 and fp16 (engine/trt_compat.py)."""
    try:
        import ganomaly_edge.train.export as export
    except ImportError:  # no torch (pytest -m gpu on a device): nothing is exported
        yield []
        return
    from ganomaly_edge.engine.trt_compat import check_bundle_graph

    original = export.write_bundle
    checked = []

    def write_checked(out_dir, onnx_bytes, reference, meta):
        problems = {k: v for k, v in check_bundle_graph(onnx_bytes).items() if v}
        assert not problems, f"exported graph would fail in TensorRT: {problems}"
        checked.append(out_dir)
        return original(out_dir, onnx_bytes, reference, meta)

    export.write_bundle = write_checked
    yield checked
    export.write_bundle = original


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto on a free loopback port, for this test only."""
    from ganomaly_edge.tools.broker import Mosquitto

    b = Mosquitto(workdir=str(tmp_path / "broker")).start()
    yield b
    b.stop()


@pytest.fixture
def scans(tmp_path):
    """An empty scanner folder the agent (and a broker that dropped root) may read."""
    d = tmp_path / "scans"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    return d


@pytest.fixture
def int8_bundle(tiny_bundle, digits, tmp_path):
    """The tiny bundle quantised to INT8 (ganomaly-build-engine --precision int8) on 24 held-back digits."""
    from ganomaly_edge.train.build_engine import main

    out = str(tmp_path / "int8")
    rc = main([tiny_bundle, "--out", out, "--precision", "int8", "--no-tensorrt", "--quiet",
               "--calibration-data", calibration_folder(tmp_path, digits)])
    assert rc == 0
    return out
