"""Field deployment, part 1: Python 3.10-3.13, install.sh into a scratch root with its broker beside
Debian's stock mosquitto config, and a unit that starts on systemd 249 (JetPack 6) and newer."""

import importlib.metadata
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from support.data import ROOT
from support.deploy import INSTALL, UNIT, directive, find_python, scratch_root, unit_directives

STOCK_MOSQUITTO = "/etc/mosquitto/mosquitto.conf"  # Debian's, from the mosquitto package
TARGET_SYSTEMD = 249  # JetPack 6 (Ubuntu 22.04)
# Directive -> the systemd version that added it (the "Added in version" notes of systemd.exec(5),
# systemd.service(5), systemd.unit(5) and systemd.resource-control(5); NEWS for the older ones).
ADDED = {
    "Description": 1, "Documentation": 1, "After": 1, "Wants": 1, "WantedBy": 1,
    "StartLimitIntervalSec": 230, "StartLimitBurst": 1, "Type": 1, "NotifyAccess": 1, "ExecStartPre": 1,
    "ExecStart": 1, "ExecReload": 1, "KillSignal": 1, "TimeoutStopSec": 1, "Restart": 1, "RestartSec": 1,
    "RestartPreventExitStatus": 189, "WatchdogSec": 1, "User": 1, "Group": 1, "SupplementaryGroups": 1,
    "UMask": 1, "StateDirectory": 235, "StateDirectoryMode": 235, "Environment": 1, "LoadCredential": 247,
    "LoadCredentialEncrypted": 250, "NoNewPrivileges": 187, "CapabilityBoundingSet": 1,
    "AmbientCapabilities": 229, "ProtectSystem": 214, "ProtectHome": 214, "ReadWritePaths": 231,
    "PrivateTmp": 1, "ProtectKernelTunables": 232, "ProtectKernelModules": 232, "ProtectKernelLogs": 244,
    "ProtectControlGroups": 232, "ProtectClock": 245, "ProtectHostname": 242, "ProtectProc": 247,
    "RestrictNamespaces": 233, "RestrictRealtime": 231, "RestrictSUIDSGID": 242, "LockPersonality": 235,
    "RemoveIPC": 232, "PrivateMounts": 239, "KeyringMode": 235, "RestrictAddressFamilies": 211,
    "SystemCallArchitectures": 213, "SystemCallFilter": 187, "SystemCallErrorNumber": 209,
}


# -- the unit ----------------------------------------------------------------------------------
def test_unit_uses_nothing_newer_than_systemd_249():
    for section, key, _ in unit_directives():
        assert key in ADDED, f"[{section}] {key}: add it to ADDED with the systemd version that introduced it"
        assert ADDED[key] <= TARGET_SYSTEMD, f"{key} needs systemd {ADDED[key]}; JetPack 6 has {TARGET_SYSTEMD}"


def test_unit_security_exposure_is_at_most_4():
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", UNIT], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 4.0, r.stdout


def test_unit_keeps_camera_gpu_and_broker_reachable_and_state_private():
    assert directive("PrivateTmp") in ([], ["no"])  # CSI cameras need /tmp/argus_socket
    for off in ("PrivateDevices", "PrivateNetwork", "PrivateUsers", "DevicePolicy", "IPAddressDeny",
                "MemoryDenyWriteExecute"):
        assert directive(off) in ([], ["no"], ["auto"]), off  # GPU/camera nodes, the broker, CUDA's JIT
    families = " ".join(directive("RestrictAddressFamilies")).split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
    assert "video" in directive("SupplementaryGroups")[0].split()
    assert directive("UMask") == ["0077"] and directive("StateDirectoryMode") == ["0700"]
    assert "2" in directive("RestartPreventExitStatus")[0].split()  # a config error is not retried
    assert directive("LoadCredentialEncrypted") == []
    assert directive("LoadCredential") == ["mqtt-password:/etc/ganomaly-edge/mqtt-password"]


def test_a_configuration_error_exits_with_the_status_the_unit_does_not_restart(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nbogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", str(bad), "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "bogus" in r.stderr


# -- Python versions ---------------------------------------------------------------------------
def test_tomli_is_declared_where_python_lacks_tomllib():
    reqs = importlib.metadata.requires("ganomaly-edge")
    tomli = [r for r in reqs if r.startswith("tomli")]
    assert tomli and 'python_version < "3.11"' in tomli[0].replace("'", '"')


def test_product_code_runs_on_python_310():
    """vermin: no syntax, stdlib module or function newer than 3.10 in the product, tools, examples and research."""
    exe = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    r = subprocess.run([exe, "-t=3.10-", "--no-tips", "--violations", "--eval-annotations", "--backport",
                        "typing_extensions", "agent", "engine", "train", "tools", "examples", "research"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_agent_installs_and_runs_on_python(version, tmp_path):
    """A fresh venv of that Python, the runtime with CI's constraints, then the agent checks a config
    and scores a folder with a shipped bundle (no torch)."""
    py = find_python(version)
    assert py, f"python{version} is not installed: CI checks 3.10 to 3.13 (pyenv install {version})"
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    r = subprocess.run(pip + ["-c", "deploy/constraints.txt", ".[cpu]"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

    scans = tmp_path / "scans"
    scans.mkdir()
    import cv2
    import numpy as np

    for i in range(3):
        cv2.imwrite(str(scans / f"item_{i}.png"), np.full((16, 16), 40 * i, np.uint8))
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'device_id = "py{version}"\n[model]\nbundle = "{BUNDLE_DIR}/recon"\n[mqtt]\nport = 1\n'
                   f'[store]\npath = "{tmp_path}/ev.db"\n[[cameras]]\nname = "c"\n[cameras.source]\n'
                   f'kind = "folder"\nuri = "{scans}"\nwatch = false\n')
    agent = str(venv / "bin" / "ganomaly-agent")
    r = subprocess.run([agent, "--config", str(cfg), "--check-config"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr[-3000:]
    r = subprocess.run([agent, "--config", str(cfg), "--flush-timeout", "1"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all sources finished" in r.stderr and "source finished after 3 frames" in r.stderr


# -- install.sh into a scratch root ------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_install(root, *args):
    return subprocess.run(["bash", INSTALL, "--root", root, "--no-l4t", "--python", sys.executable, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def stock_broker_config(root):
    """Debian's stock mosquitto.conf, its paths moved under the scratch root."""
    text = open(STOCK_MOSQUITTO).read()
    for path in ("/run/mosquitto", "/var/lib/mosquitto", "/var/log/mosquitto", "/etc/mosquitto/conf.d"):
        os.makedirs(root + path, exist_ok=True)
        if not path.startswith("/etc"):
            shutil.chown(root + path, "mosquitto", "mosquitto")
        text = text.replace(path, root + path)
    conf = os.path.join(root, "etc", "mosquitto", "mosquitto.conf")
    open(conf, "w").write(text)
    return conf


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mosquitto exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def mqtt_login(port, password, tls_ca=None):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    result = {}
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set("ganomaly", password)
    if tls_ca:
        c.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
    c.on_connect = lambda cl, u, f, rc, p: result.setdefault("rc", rc)
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    deadline = time.monotonic() + 10
    while "rc" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return result.get("rc")


@pytest.mark.slow
def test_install_into_a_scratch_root_with_its_broker_beside_the_stock_config():
    root = scratch_root()
    port, tls_port = free_port(), free_port()
    try:
        r = run_install(root, "--broker", "--signing-key", "--gpio", "--mqtt-port", str(port),
                        "--mqtts-port", str(tls_port))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        etc = os.path.join(root, "etc", "ganomaly-edge")
        agent = os.path.join(root, "opt", "ganomaly-edge", "venv", "bin", "ganomaly-agent")
        assert os.access(agent, os.X_OK)
        assert "ganomaly:" in open(os.path.join(root, "etc", "passwd")).read()  # sysusers in the root
        cred = os.path.join(etc, "mqtt-password")
        assert oct(os.stat(cred).st_mode & 0o777) == "0o600" and open(cred).read().strip()
        assert oct(os.stat(os.path.join(root, "var", "lib", "ganomaly-edge")).st_mode & 0o777) == "0o700"
        config = open(os.path.join(etc, "config.toml")).read()
        assert 'username = "ganomaly"' in config and f"port = {port} " in config
        # --signing-key: a key pair, the private half root-only, and a config that trusts the public one
        assert oct(os.stat(os.path.join(etc, "bundle-signing.pem")).st_mode & 0o777) == "0o600"
        assert f'trusted_keys = ["{etc}/bundle-signing.pub"]' in config
        assert "PUBLIC KEY" in open(os.path.join(etc, "bundle-signing.pub")).read()
        unit = os.path.join(root, "etc", "systemd", "system", "ganomaly-edge.service")
        assert f"ExecStart={agent} --config {etc}/config.toml" in open(unit).read()
        v = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
        assert "Unknown key" not in v.stderr and "Invalid" not in v.stderr, v.stderr
        _gpio_access(root)
        before = {p: open(os.path.join(etc, p)).read() for p in ("mqtt-password", "config.toml", "bundle-signing.pem")}
        cert = open(os.path.join(root, "etc", "mosquitto", "certs", "broker.pem")).read()
        # Re-running is safe: nothing generated is replaced.
        r = run_install(root, "--broker", "--signing-key", "--gpio", "--mqtt-port", str(port),
                        "--mqtts-port", str(tls_port))
        assert r.returncode == 0, r.stderr[-3000:]
        _gpio_access(root)
        assert before == {p: open(os.path.join(etc, p)).read() for p in before}
        assert cert == open(os.path.join(root, "etc", "mosquitto", "certs", "broker.pem")).read()
        _broker_accepts_the_agent_only(root, port, tls_port, before["mqtt-password"].strip())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _gpio_access(root):
    """--gpio: libgpiod's v2 bindings in the venv (install.sh checks they import), a group gpio with
    the service user in it, a udev rule giving it the chips, and the unit's drop-in adding it."""
    groups = {line.split(":")[0]: line.strip().split(":")[3].split(",")
              for line in open(os.path.join(root, "etc", "group")) if line.strip()}
    assert "ganomaly" in groups["gpio"]
    rule = open(os.path.join(root, "etc", "udev", "rules.d", "60-ganomaly-edge-gpio.rules")).read()
    assert 'KERNEL=="gpiochip*"' in rule and 'GROUP="gpio"' in rule and 'MODE="0660"' in rule
    drop_in = os.path.join(root, "etc", "systemd", "system", "ganomaly-edge.service.d", "gpio.conf")
    assert "[Service]" in open(drop_in).read() and "SupplementaryGroups=gpio" in open(drop_in).read()
    py = os.path.join(root, "opt", "ganomaly-edge", "venv", "bin", "python")
    assert subprocess.run([py, "-c", "import gpiod; gpiod.request_lines"]).returncode == 0


def _broker_accepts_the_agent_only(root, port, tls_port, password):
    conf = stock_broker_config(root)
    log = open(os.path.join(root, "broker.log"), "w")
    proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)
        wait_port(tls_port, proc)
        assert mqtt_login(port, password) == 0
        assert mqtt_login(port, "wrong") != 0  # no anonymous or wrong logins on loopback either
        assert mqtt_login(tls_port, password, os.path.join(root, "etc", "mosquitto", "certs", "ca.pem")) == 0
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    text = open(os.path.join(root, "broker.log")).read()
    assert "Error" not in text, text


def test_old_broker_config_cannot_start_beside_the_stock_one(tmp_path):
    """Problem 2 as it was: the old conf.d file repeated persistence_location."""
    old = subprocess.run(["git", "show", "dc8a291:deploy/mosquitto.conf"], cwd=ROOT, capture_output=True, text=True)
    if old.returncode != 0:
        pytest.skip("history not available in this checkout")
    new = open(os.path.join(ROOT, "deploy", "mosquitto.conf")).read()
    stock_keys = {ln.split()[0] for ln in open(STOCK_MOSQUITTO) if ln.strip() and not ln.startswith("#")}
    keys = lambda text: {ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}  # noqa: E731
    assert "persistence_location" in keys(old.stdout) & stock_keys
    assert "persistence_location" not in keys(new) and "pid_file" not in keys(new) and "log_dest" not in keys(new)


def test_core_requirements_leave_jetpacks_opencv_numpy_and_tensorrt_alone():
    """pip must not put opencv-python (no GStreamer) or a newer numpy ahead of JetPack's, nor the
    CPU onnxruntime beside a Jetson onnxruntime-gpu wheel (the same module)."""
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in importlib.metadata.requires("ganomaly-edge")]
    core = [r for r in reqs if not (r.marker and "extra" in str(r.marker))]
    names = {r.name.lower() for r in core}
    assert not names & {"opencv-python", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "tensorrt"}
    numpy = next(r for r in core if r.name == "numpy")
    assert numpy.specifier.contains("1.21.5")  # JetPack 6's python3-numpy
    cpu = {r.name.lower() for r in reqs if r.marker and r.marker.evaluate({"extra": "cpu"})}
    assert {"opencv-python-headless", "onnxruntime"} <= cpu


def test_tensorrt_install_without_the_cuda_toolkit_stops_before_changing_anything(tmp_path):
    """pycuda builds from source: without nvcc on PATH pip would fail halfway (as root, as it did)."""
    root = tmp_path / "root"
    root.mkdir()
    env = dict(os.environ, CUDA_HOME=str(tmp_path / "no-cuda"), PATH="/usr/bin:/bin")
    r = subprocess.run(["bash", INSTALL, "--root", str(root), "--tensorrt"], cwd=ROOT, capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 1 and "nvcc not found" in r.stderr and "CUDA toolkit" in r.stderr
    assert not (root / "opt").exists()


def test_every_command_has_version():
    scripts = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.value.startswith("ganomaly_edge")]
    assert {e.name for e in scripts} == {"ganomaly-train", "ganomaly-eval", "ganomaly-build-engine", "ganomaly-bench",
                                         "ganomaly-calibrate",
                                         "ganomaly-agent"}
    for e in scripts:
        exe = os.path.join(os.path.dirname(sys.executable), e.name)
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == f"{e.name} {importlib.metadata.version('ganomaly-edge')}"


def test_dependencies_whose_next_major_release_breaks_us_are_bounded():
    """A fresh install took whatever was newest; the majors known to change what we use are capped
    (numpy's ABI, paho-mqtt's callback API, pydantic's models and settings)."""
    from packaging.requirements import Requirement

    reqs = {Requirement(r).name.lower(): Requirement(r) for r in importlib.metadata.requires("ganomaly-edge")}
    for name, next_major in (("numpy", "3.0"), ("paho-mqtt", "3.0"), ("pydantic", "3.0"), ("pydantic-settings", "3.0")):
        assert not reqs[name].specifier.contains(next_major), name
