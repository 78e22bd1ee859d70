"""The set-up cannot pull torch's multi-GB CUDA build by surprise (deploy/install-torch.sh, the
Makefile), and apt waits for the dpkg lock another apt holds instead of failing at once."""

import json
import os
import re
import subprocess
import sys

import pytest

from support.data import ROOT

SCRIPT = os.path.join(ROOT, "deploy", "install-torch.sh")


@pytest.fixture(scope="module")
def pip(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch-venv")
    subprocess.run([sys.executable, "-m", "venv", str(d / "v")], check=True)
    return str(d / "v" / "bin" / "pip")


def test_cpu_resolves_to_the_cpu_build(pip, tmp_path):
    """What pip would install (a dry run: nothing is downloaded into the venv) is torch's +cpu build."""
    report = tmp_path / "report.json"
    env = dict(os.environ, TORCH_PIP_OPTS=f"--dry-run --ignore-installed --report {report}")
    r = subprocess.run(["sh", SCRIPT, pip, "cpu"], env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "from https://" in r.stdout:
        pytest.skip(f"no local CPU wheel and PyTorch's CPU index unreachable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stdout + r.stderr
    versions = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert versions["torch"].endswith("+cpu"), versions
    assert not [n for n in versions if n.startswith("nvidia-")], versions  # no CUDA libraries come along


def test_an_unknown_kind_is_refused(pip):
    r = subprocess.run(["sh", SCRIPT, pip, "gpu"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "TORCH must be cpu or cuda, not 'gpu'" in r.stderr


def test_makefile_installs_torch_only_through_the_script():
    make = open(os.path.join(ROOT, "Makefile")).read()
    pip_lines = [line for line in make.splitlines() if "pip install" in line]
    assert pip_lines and not [line for line in pip_lines if re.search(r"\btorch\b", line)], pip_lines
    assert "deploy/install-torch.sh $(BIN)/pip $(TORCH)" in make and re.search(r"^TORCH \?= cpu$", make, re.M)
    r = subprocess.run(["make", "-n", "-B", "-C", ROOT, "/nonexistent/bin/.installed", "VENV=/nonexistent"],
                       capture_output=True, text=True, timeout=60)
    assert "install-torch.sh /nonexistent/bin/pip cpu" in r.stdout, r.stdout + r.stderr


def test_apt_waits_for_the_dpkg_lock():
    """Every apt-get that installs or updates, in the Makefile and deploy/install.sh, waits for the lock."""
    for name in ("Makefile", os.path.join("deploy", "install.sh")):
        text = open(os.path.join(ROOT, name)).read()
        if name == "Makefile":
            apt = re.search(r"^APT := (.*)$", text, re.M).group(1)
            text = text.replace("$(APT)", apt)
        calls = re.findall(r"apt-get[^\n;&|]*\b(?:update|install)\b", text)
        calls = [c for c in calls if not re.match(r"apt-get:", c)]  # the message for a machine without apt
        assert calls, name
        for c in calls:
            assert re.search(r"-o DPkg::Lock::Timeout=\d{3,}", c), f"{name}: {c!r} fails at once on a held dpkg lock"
