#!/usr/bin/env bash
# Install ganomaly-edge as a systemd service. Run as root from the repository root.
#
#   deploy/install.sh [--tensorrt] [--gpu] [--genicam] [--gpio] [--broker] [--signing-key] [--root DIR] [--no-apt]
#                     [--python PY]
#                     [--mqtt-port N] [--mqtts-port N] [--l4t | --no-l4t]
#
#   /opt/ganomaly-edge/venv      the venv (sees the system site-packages: JetPack's TensorRT, OpenCV, numpy)
#   /etc/ganomaly-edge/          config.toml, mqtt-password (the agent's broker password, root-only)
#   /var/lib/ganomaly-edge/      bundle, event store (the service's private state directory)
#
# --tensorrt  build pycuda (CUDA on PATH) and set model.backend = "tensorrt", so a missing GPU
#             stack stops the service with the reason instead of running on the CPU
# --gpu       an x86-64 host with an NVIDIA GPU and no TensorRT: onnxruntime-gpu instead of the CPU
#             onnxruntime (CUDA and TensorRT execution providers; docs/deployment-x86-nvidia.md).
#             On a Jetson, install NVIDIA's onnxruntime-gpu wheel yourself (deploy/JETSON.md): kept if found
# Both branches install onnx (every plan build checks the graph with it) and ONNX Runtime (the CPU
# fallback, and the self-check's reference); on a Jetson the ONNX Runtime wheel from PyPI.
# --genicam   industrial GigE Vision / USB3 Vision cameras (source kind "genicam"): Aravis from apt
#             (gir1.2-aravis-0.8, aravis-tools for arv-tool-0.8) and python3-gi, which the venv sees; the
#             [genicam] extra (PyGObject) is then satisfied without building anything (docs/plant.md)
# --gpio      item triggers from a GPIO line (items.trigger = "gpio"): the [gpio] extra (libgpiod v2
#             bindings), a group gpio that owns /dev/gpiochip* (a udev rule) with the service user in it,
#             and the unit's drop-in adding it (docs/plant.md)
# --broker    a local mosquitto beside Debian's stock config: a loopback listener for the agent
#             and a TLS listener for subscribers, both with a password file this script makes
# --signing-key  an ed25519 key pair for bundles: /etc/ganomaly-edge/bundle-signing.pem (root only)
#             and .pub; a new config trusts only bundles signed with it (docs/security.md)
# --root DIR  install under DIR as if it were / (files and the paths inside them), skipping apt,
#             systemctl and anything outside DIR: for tests and for inspecting what it would do
# Re-running is safe: existing config, credentials, certificates and passwords are kept.
set -euo pipefail

ROOT=""; TRT=0; GPU=0; GENICAM=0; GPIO=0; BROKER=0; SIGN=0; APT=1; L4T=auto; PY=python3; MQTT_PORT=1883; MQTTS_PORT=8883
while [ $# -gt 0 ]; do
  case "$1" in
    --tensorrt) TRT=1;;
    --gpu) GPU=1;;
    --genicam) GENICAM=1;;
    --gpio) GPIO=1;;
    --broker) BROKER=1;;
    --signing-key) SIGN=1;;
    --root) ROOT=$(cd "$2" && pwd); shift;;
    --no-apt) APT=0;;
    --python) PY=$2; shift;;
    --mqtt-port) MQTT_PORT=$2; shift;;
    --mqtts-port) MQTTS_PORT=$2; shift;;
    --l4t) L4T=1;;
    --no-l4t) L4T=0;;
    -h|--help) sed -n '2,31p' "$0"; exit 0;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2;;
  esac
  shift
done
src=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (or pass --root DIR)"
[ -z "$ROOT" ] || APT=0

OPT=$ROOT/opt/ganomaly-edge; ETC=$ROOT/etc/ganomaly-edge; STATE=$ROOT/var/lib/ganomaly-edge
VENV=$OPT/venv
if [ "$L4T" = auto ]; then
  if [ -f "$ROOT/etc/nv_tegra_release" ]; then L4T=1; else L4T=0; fi
fi
[ "$L4T" = 1 ] && say "L4T (Jetson) detected: keeping JetPack's OpenCV, numpy and TensorRT"

# -- preflight: fail before changing anything ---------------------------------------------------
if [ "$GPU" = 1 ] && [ "$L4T" = 1 ]; then
  die "--gpu is for x86-64 hosts: on a Jetson, install the onnxruntime-gpu wheel NVIDIA builds for your JetPack (Jetson Zoo) into $VENV, then re-run without --gpu (deploy/JETSON.md)"
fi
if [ "$TRT" = 1 ]; then
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  export PATH="$CUDA_HOME/bin:$PATH" CPATH="$CUDA_HOME/include:${CPATH:-}" LIBRARY_PATH="$CUDA_HOME/lib64:${LIBRARY_PATH:-}"
  command -v nvcc >/dev/null || die "nvcc not found under $CUDA_HOME/bin: pycuda builds from source and needs the CUDA toolkit (JetPack: apt install nvidia-jetpack); or set CUDA_HOME"
fi

# -- system packages ---------------------------------------------------------------------------
if [ "$APT" = 1 ]; then
  pkgs="python3-venv openssl"
  [ "$BROKER" = 1 ] && pkgs="$pkgs mosquitto mosquitto-clients"
  [ "$GENICAM" = 1 ] && pkgs="$pkgs gir1.2-aravis-0.8 aravis-tools python3-gi"
  # wait for the dpkg lock another apt holds (a fresh machine's unattended upgrades at boot)
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $pkgs >/dev/null
fi

# -- the service user (sysusers.d, so the OS keeps it) and its directories ---------------------
install -d -m 0755 "$ROOT/etc/sysusers.d" "$ROOT/etc/systemd/system" "$OPT"
install -m 0644 "$src/deploy/ganomaly-edge.sysusers" "$ROOT/etc/sysusers.d/ganomaly-edge.conf"
if [ -n "$ROOT" ]; then
  systemd-sysusers --root="$ROOT" "$ROOT/etc/sysusers.d/ganomaly-edge.conf"
else
  systemd-sysusers /etc/sysusers.d/ganomaly-edge.conf
fi
if [ "$GPIO" = 1 ]; then
  # /dev/gpiochip* are root's by default: a group gpio owns them (JetPack's Jetson.GPIO rules use
  # the same name), the service user joins it, and the unit's drop-in adds it to the service.
  printf 'g gpio -\nm ganomaly gpio\n' >"$ROOT/etc/sysusers.d/ganomaly-edge-gpio.conf"
  if [ -n "$ROOT" ]; then
    systemd-sysusers --root="$ROOT" "$ROOT/etc/sysusers.d/ganomaly-edge-gpio.conf"
  else
    systemd-sysusers /etc/sysusers.d/ganomaly-edge-gpio.conf
  fi
  install -d -m 0755 "$ROOT/etc/udev/rules.d" "$ROOT/etc/systemd/system/ganomaly-edge.service.d"
  echo 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' \
    >"$ROOT/etc/udev/rules.d/60-ganomaly-edge-gpio.rules"
  printf '[Service]\n# items.trigger = "gpio": /dev/gpiochip* (deploy/install.sh --gpio)\nSupplementaryGroups=gpio\n' \
    >"$ROOT/etc/systemd/system/ganomaly-edge.service.d/gpio.conf"
  if [ -z "$ROOT" ] && command -v udevadm >/dev/null; then
    udevadm control --reload && udevadm trigger --subsystem-match=gpio || say "udevadm could not re-apply the rules: reboot before the agent opens a GPIO line"
  fi
fi
gid=$(awk -F: '$1 == "ganomaly" {print $3}' "$ROOT/etc/group")
uid=$(awk -F: '$1 == "ganomaly" {print $3}' "$ROOT/etc/passwd")
[ -n "$gid" ] && [ -n "$uid" ] || die "user ganomaly was not created"
install -d -m 0750 -o 0 -g "$gid" "$ETC"
install -d -m 0700 -o "$uid" -g "$gid" "$STATE"

# -- the venv: the system's packages stay visible and are never shadowed ------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
if [ "$L4T" = 1 ]; then
  # Pin what JetPack ships, so no dependency can pull a newer copy over it.
  "$VENV/bin/python" - >"$constraints" <<'EOF'
import importlib.metadata as md
for dist in ("numpy", "opencv-python", "opencv-contrib-python", "tensorrt", "onnxruntime-gpu"):
    try:
        print(f"{dist}=={md.version(dist)}")
    except md.PackageNotFoundError:
        pass
EOF
  extras="[onnx]"
  "$VENV/bin/python" -c "import cv2, numpy" 2>/dev/null || die "JetPack's OpenCV/numpy are not importable from the system Python: install nvidia-jetpack (python3-opencv, python3-numpy)"
else
  cp "$src/deploy/constraints.txt" "$constraints"
  extras="[cpu,onnx]"
  if [ "$GPU" = 1 ]; then
    extras="[gpu]"
    "$VENV/bin/pip" uninstall -q -y onnxruntime 2>/dev/null || true  # the same module as onnxruntime-gpu
  fi
fi
[ "$GENICAM" = 1 ] && extras="${extras%]},genicam]"
[ "$GPIO" = 1 ] && extras="${extras%]},gpio]"
"$VENV/bin/pip" install -q -c "$constraints" "$src$extras"
if [ "$GENICAM" = 1 ] && [ "$APT" = 1 ]; then
  "$VENV/bin/python" -c 'import gi; gi.require_version("Aravis", "0.8")' \
    || die "Aravis does not import in $VENV (apt install gir1.2-aravis-0.8 python3-gi): see docs/plant.md"
fi
if [ "$GPIO" = 1 ]; then  # Debian's python3-libgpiod is the older v1 API under the same name
  "$VENV/bin/python" -c 'import gpiod; gpiod.request_lines' \
    || die "libgpiod's v2 bindings do not import in $VENV (pip install 'gpiod>=2.0.2'): see docs/plant.md"
fi
if [ "$L4T" = 1 ]; then
  if "$VENV/bin/python" -c "import onnxruntime" 2>/dev/null; then
    say "keeping the installed ONNX Runtime $("$VENV/bin/python" -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())')"
  else
    # PyPI's aarch64 onnxruntime asks for numpy >= 1.21.6; JetPack 6 ships 1.21.5, with which it runs.
    # So: the wheel without its numpy requirement, then its other requirements against JetPack's pins.
    "$VENV/bin/pip" install -q --no-deps -c "$src/deploy/constraints.txt" onnxruntime
    deps=$("$VENV/bin/python" -c '
import importlib.metadata as md, re
for r in md.requires("onnxruntime") or []:
    name = re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]
    if "extra ==" not in r and name.lower() != "numpy":
        print(r.split(";")[0].replace(" ", ""))
')
    # shellcheck disable=SC2086
    [ -z "$deps" ] || "$VENV/bin/pip" install -q -c "$constraints" $deps
  fi
  "$VENV/bin/python" -c "import onnxruntime, onnx" || die "ONNX Runtime or onnx does not import in $VENV with JetPack's numpy: see deploy/JETSON.md"
fi
if [ "$L4T" = 1 ]; then
  where=$("$VENV/bin/python" -c "import cv2; print(cv2.__file__)")
  case "$where" in "$VENV"/*) die "OpenCV in the venv ($where) shadows JetPack's (no GStreamer): pip uninstall it";; esac
fi
if [ "$TRT" = 1 ]; then  # CUDA is on PATH since the preflight
  "$VENV/bin/pip" install -q -c "$constraints" "pycuda>=2024.1"
  "$VENV/bin/python" -c "import tensorrt, pycuda.driver" || die "TensorRT or pycuda does not import in $VENV: see deploy/JETSON.md"
fi

# -- config and credentials (kept on a re-run) -------------------------------------------------
if [ "$SIGN" = 1 ] && [ ! -f "$ETC/bundle-signing.pem" ]; then
  # The private key stays root-only: the service user can check signatures, never make them.
  (umask 077 && "$VENV/bin/ganomaly-build-engine" --new-signing-key "$ETC/bundle-signing.pem")
  chown 0:0 "$ETC/bundle-signing.pem"; chmod 0600 "$ETC/bundle-signing.pem"
  chown 0:"$gid" "$ETC/bundle-signing.pub"; chmod 0644 "$ETC/bundle-signing.pub"
fi
if [ ! -f "$ETC/config.toml" ]; then
  sed -e "s|/var/lib/ganomaly-edge|$STATE|g" "$src/config.example.toml" >"$ETC/config.toml"
  [ "$SIGN" = 1 ] && sed -i "s|^# trusted_keys = \[.*\]|trusted_keys = [\"$ETC/bundle-signing.pub\"]|" "$ETC/config.toml"
  [ "$TRT" = 1 ] && sed -i 's/^backend = "auto"/backend = "tensorrt"/' "$ETC/config.toml"
  if [ "$BROKER" = 1 ]; then  # the agent logs in to the local broker with the generated password
    sed -i -e 's/^# username = "ganomaly"/username = "ganomaly"/' \
      -e 's/^# password_file = "mqtt-password"/password_file = "mqtt-password"/' \
      -e "s/^port = 1883 /port = $MQTT_PORT /" "$ETC/config.toml"
  fi
  chown 0:"$gid" "$ETC/config.toml"; chmod 0640 "$ETC/config.toml"
fi
# Always present, so the unit's LoadCredential= finds it (an absent file stops the service).
[ -f "$ETC/mqtt-password" ] || install -m 0600 -o 0 -g 0 /dev/null "$ETC/mqtt-password"

# -- broker: beside Debian's stock mosquitto.conf, never repeating what it sets ----------------
if [ "$BROKER" = 1 ]; then
  MQ=$ROOT/etc/mosquitto
  install -d -m 0755 "$MQ/conf.d" "$MQ/certs"
  if [ ! -s "$ETC/mqtt-password" ]; then
    "$PY" -c "import secrets; print(secrets.token_urlsafe(24))" >"$ETC/mqtt-password"
  fi
  if [ ! -f "$MQ/ganomaly-edge.passwd" ] || ! grep -q '^ganomaly:' "$MQ/ganomaly-edge.passwd"; then
    touch "$MQ/ganomaly-edge.passwd"
    mosquitto_passwd -b "$MQ/ganomaly-edge.passwd" ganomaly "$(cat "$ETC/mqtt-password")"
  fi
  chmod 0640 "$MQ/ganomaly-edge.passwd"
  if [ ! -f "$MQ/certs/broker.pem" ]; then  # a CA of this device and the broker's certificate
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ganomaly-edge CA $(hostname)" \
      -keyout "$MQ/certs/ca.key" -out "$MQ/certs/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$(hostname)" -keyout "$MQ/certs/broker.key" \
      -out "$MQ/certs/broker.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$(hostname)" >"$MQ/certs/san.ext"
    openssl x509 -req -in "$MQ/certs/broker.csr" -CA "$MQ/certs/ca.pem" -CAkey "$MQ/certs/ca.key" \
      -CAcreateserial -days 3650 -extfile "$MQ/certs/san.ext" -out "$MQ/certs/broker.pem" 2>/dev/null
    chmod 0600 "$MQ/certs/ca.key"; chmod 0640 "$MQ/certs/broker.key"
  fi
  getent_group() { awk -F: -v g="$1" '$1 == g {print $3}' "$ROOT/etc/group"; }
  mq_gid=$(getent_group mosquitto); [ -n "$mq_gid" ] && chgrp "$mq_gid" "$MQ/ganomaly-edge.passwd" "$MQ/certs/broker.key"
  sed -e "s|@ETC_MOSQUITTO@|$MQ|g" -e "s|@MQTT_PORT@|$MQTT_PORT|g" -e "s|@MQTTS_PORT@|$MQTTS_PORT|g" \
    "$src/deploy/mosquitto.conf" >"$MQ/conf.d/ganomaly-edge.conf"
  say "broker: loopback :$MQTT_PORT and TLS :$MQTTS_PORT, user ganomaly (password in $ETC/mqtt-password); subscribers trust $MQ/certs/ca.pem"
fi

# -- the unit ----------------------------------------------------------------------------------
sed -e "s|/opt/ganomaly-edge|$OPT|g" -e "s|/etc/ganomaly-edge|$ETC|g" -e "s|/var/lib/ganomaly-edge|$STATE|g" \
  "$src/deploy/ganomaly-edge.service" >"$ROOT/etc/systemd/system/ganomaly-edge.service"
chmod 0644 "$ROOT/etc/systemd/system/ganomaly-edge.service"
cp "$src/README.md" "$OPT/README.md"
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  [ "$BROKER" = 1 ] && systemctl restart mosquitto
fi
say "installed. Next:"
say "  1. copy a bundle to $STATE/bundle and, on a GPU, build its plan: $VENV/bin/ganomaly-build-engine $STATE/bundle --out $STATE/bundle"
[ -f "$ETC/bundle-signing.pem" ] && say "     signed bundles: add --sign-key $ETC/bundle-signing.pem (the config trusts $ETC/bundle-signing.pub)"
say "     (first time on a device: $VENV/bin/ganomaly-build-engine --self-check; exit 0 pass, 1 fail, 3 no TensorRT/GPU)"
say "  2. edit $ETC/config.toml (cameras, bundle)"
say "     check it: $VENV/bin/ganomaly-agent -c $ETC/config.toml --check-config"
say "  3. systemctl enable --now ganomaly-edge; journalctl -fu ganomaly-edge"
