#!/usr/bin/env bash
# Install ganomaly-edge as a systemd service: /opt/ganomaly-edge (venv), /etc/ganomaly-edge
# (config), /var/lib/ganomaly-edge (bundle, event store). Run as root from the repository root.
#   deploy/install.sh [--tensorrt] [--broker]
set -euo pipefail
TRT=0; BROKER=0
for a in "$@"; do case "$a" in --tensorrt) TRT=1;; --broker) BROKER=1;; *) echo "unknown option $a" >&2; exit 2;; esac; done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
src=$(cd "$(dirname "$0")/.." && pwd)
apt-get update -qq
apt-get install -y -qq python3-venv libgl1 libglib2.0-0 >/dev/null
[ $BROKER = 1 ] && apt-get install -y -qq mosquitto >/dev/null && install -m 0644 "$src/deploy/mosquitto.conf" /etc/mosquitto/conf.d/ganomaly-edge.conf && systemctl restart mosquitto
id ganomaly >/dev/null 2>&1 || useradd --system --home /var/lib/ganomaly-edge --groups video ganomaly
python3 -m venv --system-site-packages /opt/ganomaly-edge/venv   # system site: JetPack's tensorrt and OpenCV
/opt/ganomaly-edge/venv/bin/pip install -q --upgrade pip
/opt/ganomaly-edge/venv/bin/pip install -q "$src"
[ $TRT = 1 ] && /opt/ganomaly-edge/venv/bin/pip install -q pycuda   # needs CUDA on PATH: see deploy/JETSON.md
install -d -m 0755 /etc/ganomaly-edge
[ -f /etc/ganomaly-edge/config.toml ] || install -m 0640 -g ganomaly "$src/config.example.toml" /etc/ganomaly-edge/config.toml
install -d -o ganomaly -g ganomaly /var/lib/ganomaly-edge
install -m 0644 "$src/deploy/ganomaly-edge.service" /etc/systemd/system/ganomaly-edge.service
cp "$src/README.md" /opt/ganomaly-edge/README.md
systemctl daemon-reload
echo "installed. Next:"
echo "  1. copy a bundle to /var/lib/ganomaly-edge/bundle and, on a GPU, build its plan here:"
echo "     sudo -u ganomaly /opt/ganomaly-edge/venv/bin/ganomaly-build-engine /var/lib/ganomaly-edge/bundle --out /var/lib/ganomaly-edge/bundle"
echo "  2. edit /etc/ganomaly-edge/config.toml, check it: /opt/ganomaly-edge/venv/bin/ganomaly-agent -c /etc/ganomaly-edge/config.toml --check-config"
echo "  3. systemctl enable --now ganomaly-edge; journalctl -fu ganomaly-edge"
