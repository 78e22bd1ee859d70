"""``ganomaly-bench engine BUNDLE --compare --int8 B`` (issue 34): every CPU path in one run, with the
real ONNX Runtime and OpenVINO; what the table holds, not how fast (the machine is shared)."""

import json

import pytest


def test_compare_puts_every_path_side_by_side_with_ratios_and_a_profile(tiny_bundle, int8_bundle, capsys):
    from ganomaly_edge.engine.backends.openvino import openvino_available
    from ganomaly_edge.tools.bench import main

    assert main(["engine", tiny_bundle, "--compare", "--int8", int8_bundle, "--rounds", "2", "--profile"]) == 0
    r = json.loads(capsys.readouterr().out)
    want = {f"{who} onnxruntime {p}" for who in ("ours", "raw") for p in ("fp32", "int8")}
    if openvino_available():
        want |= {f"{who} openvino {p}" for who in ("ours", "raw") for p in ("fp32", "int8")}
    assert set(r["results"]) == {"16px batch 1", "16px batch 8"}
    for table in r["results"].values():
        assert want <= set(table)
        assert table["ours onnxruntime fp32"]["vs_ours_fp32_ort"] == 1.0
        assert all(v["median_ms"] > 0 and v["share_of_peak"] >= 0 for v in table.values())
    assert r["fp32_matmul_peak_gflops"] > 0 and r["int8_matmul_peak_gops"] > 0
    assert r["engines"]["ours onnxruntime int8"]["precision"] == "int8"
    # threads default to the cores: with 2+ the split engine runs beside its unsplit self
    if r["threads"] > 1:
        assert r["engines"]["ours onnxruntime fp32"]["split"] == r["threads"]
        assert r["engines"]["ours onnxruntime fp32 unsplit"]["split"] == 0
        assert all("ours onnxruntime fp32 unsplit" in t for t in r["results"].values())
    assert all(e["selftest"]["passed"] for e in r["engines"].values())
    prof = r["ort_op_profile_ms"]
    assert "QuantizeLinear" not in prof["fp32"] and any(op in prof["int8"] for op in
                                                        ("QuantizeLinear", "DequantizeLinear", "QLinearConv"))


def test_compare_without_a_bundle_says_so(capsys):
    from ganomaly_edge.tools.bench import main

    with pytest.raises(SystemExit):
        main(["engine", "--compare"])
    assert "--compare needs a BUNDLE" in capsys.readouterr().err
