"""The deployment files as tests read them: the systemd unit, install.sh, a Python to install into."""

import glob
import grp
import os
import pwd
import shutil
import subprocess
import tempfile

from .data import ROOT

UNIT = os.path.join(ROOT, "deploy", "ganomaly-edge.service")
INSTALL = os.path.join(ROOT, "deploy", "install.sh")


def unit_directives(path=UNIT):
    out = []
    section = None
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def directive(name, path=UNIT):
    return [v for _, k, v in unit_directives(path) if k == name]


def find_python(version):
    for cand in [shutil.which(f"python{version}")] + sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))):
        if cand and subprocess.run([cand, "-c", "import venv"], capture_output=True).returncode == 0:
            return cand
    return None


def scratch_root():
    """A root the mosquitto user can traverse (pytest's tmp dirs are private to root)."""
    root = tempfile.mkdtemp(prefix="ganomaly-root-", dir="/tmp")
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, "etc"))
    # The host's mosquitto user, as the mosquitto package would have made it on the device.
    mq = pwd.getpwnam("mosquitto")
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write(f"root:x:0:0:root:/root:/bin/sh\nmosquitto:x:{mq.pw_uid}:{mq.pw_gid}::/var/lib/mosquitto:/usr/sbin/nologin\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write(f"root:x:0:\nvideo:x:44:\nmosquitto:x:{grp.getgrgid(mq.pw_gid).gr_gid}:\n")
    return root
