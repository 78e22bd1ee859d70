"""Signed bundles (engine/signing.py) and --check-config's self-test, against the shipped bundle,
real keys (cryptography), real ONNX Runtime and the agent's real command line."""

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from support.data import ROOT, edit_bundle_meta
from ganomaly_edge.engine import BundleError, load, open_bundle
from ganomaly_edge.engine.bundle import sha256_file
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR
from ganomaly_edge.train.build_engine import main as build_engine

SHIPPED = os.path.join(BUNDLE_DIR, "recon")


def new_key(path):
    assert build_engine(["--new-signing-key", str(path)]) == 0
    return str(path), str(path).replace(".pem", ".pub")


@pytest.fixture
def keys(tmp_path):
    return new_key(tmp_path / "ours.pem"), new_key(tmp_path / "theirs.pem")


def signed(tmp_path, key, name="signed"):
    out = tmp_path / name
    assert build_engine([SHIPPED, "--out", str(out), "--no-tensorrt", "--sign-key", key]) == 0
    return str(out)


def agent_config(tmp_path, bundle, trusted):
    cfg = tmp_path / "a.toml"
    keys = ", ".join(json.dumps(k) for k in trusted)
    (tmp_path / "scans").mkdir(exist_ok=True)
    cfg.write_text(f'[model]\nbundle = "{bundle}"\ntrusted_keys = [{keys}]\n[mqtt]\nport = 1\n'
                   f'[store]\npath = "{tmp_path}/ev.db"\n[[cameras]]\nname = "c"\n[cameras.source]\n'
                   f'kind = "folder"\nuri = "{tmp_path}/scans"\nwatch = false\n')
    return str(cfg)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_key_pair_is_made_private_0600_and_never_overwritten(tmp_path):
    os.umask(0o022)
    private, public = new_key(tmp_path / "k.pem")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600 and "PRIVATE KEY" in open(private).read()
    assert "PUBLIC KEY" in open(public).read()
    assert build_engine(["--new-signing-key", private]) == 2


def test_a_bundle_signed_by_a_trusted_key_loads(tmp_path, keys):
    (ours, ours_pub), _ = keys
    b = signed(tmp_path, ours)
    eng = load(b, trusted_keys=[ours_pub])
    assert eng.bundle.signed_by and eng.selftest_report["passed"]
    assert eng.describe()["signed_by"] == eng.bundle.signed_by  # in the stats
    eng.close()


def test_a_bundle_signed_by_another_key_is_refused_naming_the_keys(tmp_path, keys):
    (ours, ours_pub), (theirs, _) = keys
    b = signed(tmp_path, theirs)
    with pytest.raises(BundleError, match=r"signed by key [0-9a-f]{16}, which is not trusted here") as e:
        open_bundle(b, trusted_keys=[ours_pub])
    assert ours_pub in str(e.value)
    cfg = agent_config(tmp_path, b, [ours_pub])
    for args in (["--check-config"], ["--flush-timeout", "0"]):  # the check and the agent itself
        r = cli("--config", cfg, *args)
        assert r.returncode == 2 and "not trusted here" in r.stderr and ours_pub in r.stderr, r.stderr[-2000:]


def test_an_unsigned_bundle_is_refused_only_where_keys_are_trusted(tmp_path, keys):
    (_, ours_pub), _ = keys
    with pytest.raises(BundleError, match="is not signed"):
        open_bundle(SHIPPED, trusted_keys=[ours_pub])
    open_bundle(SHIPPED)  # without trusted_keys nothing changes
    r = cli("--config", agent_config(tmp_path, SHIPPED, []), "--check-config")
    assert r.returncode == 0, r.stderr


def test_an_edited_manifest_with_its_hash_recomputed_is_refused(tmp_path, keys):
    """The probe's row: a threshold that never alarms, the integrity hash made to match."""
    (ours, ours_pub), _ = keys
    b = signed(tmp_path, ours)
    edit_bundle_meta(b, lambda m: m["calibration"].__setitem__("threshold_raw", 1e9))
    open_bundle(b)  # the unkeyed hash is satisfied ...
    with pytest.raises(BundleError, match="changed after it was signed"):  # ... the signature is not
        open_bundle(b, trusted_keys=[ours_pub])


def test_a_private_key_in_trusted_keys_is_named_as_the_mistake(tmp_path, keys):
    (ours, _), _ = keys
    with pytest.raises(BundleError, match="is a private key"):
        open_bundle(signed(tmp_path, ours), trusted_keys=[ours])


def test_rebuilding_without_the_key_removes_a_signature_that_no_longer_matches(tmp_path, keys):
    (ours, ours_pub), _ = keys
    b = signed(tmp_path, ours)
    copy = str(tmp_path / "copy")
    assert build_engine([b, "--out", copy, "--no-tensorrt"]) == 0  # unchanged: still signed
    open_bundle(copy, trusted_keys=[ours_pub])
    edit_bundle_meta(copy, lambda m: m.__setitem__("name", "renamed"))  # as adding a plan rewrites it
    assert build_engine([copy, "--out", copy, "--no-tensorrt"]) == 0
    assert not os.path.exists(os.path.join(copy, "bundle.json.sig"))
    assert build_engine([copy, "--out", copy, "--no-tensorrt", "--sign-key", ours]) == 0
    open_bundle(copy, trusted_keys=[ours_pub])


def test_check_config_runs_the_bundles_self_test(tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(SHIPPED, b)
    ref_path = os.path.join(b, "reference.npz")
    ref = dict(np.load(ref_path))
    ref["score"] = ref["score"] + 0.5 * open_bundle(b).calibration.scale
    np.savez(ref_path, **ref)
    edit_bundle_meta(b, lambda m: m["files"].__setitem__("reference.npz", sha256_file(ref_path)))
    r = cli("--config", agent_config(tmp_path, b, []), "--check-config")
    assert r.returncode == 2 and "score differs from the reference" in r.stderr, (r.stdout, r.stderr)
