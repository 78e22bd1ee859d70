"""ONNX Runtime's execution providers on a host without TensorRT: the order from [model] providers,
and the log naming the one in use (an NVIDIA server with onnxruntime-gpu runs on CUDA, not "the CPU")."""

import sys

import pytest

from ganomaly_edge.engine import BundleError, load


class _CudaSession:
    """ONNX Runtime's session as onnxruntime-gpu makes it on an NVIDIA host: CUDA first (run on the
    CPU here, where there is no GPU)."""

    def __init__(self, ort, path, so, providers):
        self.asked = providers
        self.inner = ort._RealInferenceSession(path, so, providers=["CPUExecutionProvider"])

    def get_providers(self):
        return [p for p in self.asked if p in ("CUDAExecutionProvider", "CPUExecutionProvider")]

    def run(self, *a, **k):
        return self.inner.run(*a, **k)


@pytest.fixture
def gpu_onnxruntime(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "_RealInferenceSession", ort.InferenceSession, raising=False)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", lambda path, so, providers: _CudaSession(ort, path, so, providers))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT on this server
    return ort


def test_the_log_names_the_provider_in_use(gpu_onnxruntime, tiny_bundle, caplog):
    with caplog.at_level("INFO"):
        eng = load(tiny_bundle)
    assert eng.providers[0] == "CUDAExecutionProvider" and eng.device == "the GPU (CUDAExecutionProvider)"
    assert "ONNX Runtime on the GPU (CUDAExecutionProvider)" in caplog.text
    assert "on the CPU" not in caplog.text


def test_configured_order_is_passed_to_onnx_runtime(gpu_onnxruntime, tiny_bundle):
    eng = load(tiny_bundle, "onnxruntime", providers=["tensorrt", "cuda", "cpu"])
    assert eng.session.asked == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert eng.describe()["device"] == "the GPU (CUDAExecutionProvider)"


def test_providers_this_onnx_runtime_lacks_are_skipped_with_a_warning(tiny_bundle, caplog):
    with caplog.at_level("WARNING"):
        eng = load(tiny_bundle, "onnxruntime", providers=["cuda", "cpu"])
    assert eng.providers == ["CPUExecutionProvider"] and eng.device == "the CPU"
    assert "['CUDAExecutionProvider'] are not available here" in caplog.text
    with pytest.raises(BundleError, match="none of the ONNX Runtime providers.*onnxruntime-gpu.*install.sh --gpu"):
        load(tiny_bundle, "onnxruntime", providers=["cuda"])


def test_providers_in_the_config(tmp_path):
    from ganomaly_edge.agent.config import ConfigError, load_settings

    p = tmp_path / "c.toml"
    cam = '[[cameras]]\nname = "c"\n[cameras.source]\nkind = "file"\nuri = "v.mp4"\n'
    p.write_text('[model]\nbundle = "b"\nproviders = ["tensorrt", "cuda", "cpu"]\n' + cam)
    assert load_settings(str(p)).model.providers == ["tensorrt", "cuda", "cpu"]
    p.write_text('[model]\nbundle = "b"\nproviders = ["gpu"]\n' + cam)
    with pytest.raises(ConfigError, match="providers"):
        load_settings(str(p))
