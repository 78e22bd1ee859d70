# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set up everything and run the agent on a demo stream (see README)
#   make test   set up everything and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# torch: cpu (default, the CPU-only build: never the multi-GB CUDA one by surprise) or cuda
# (make TORCH=cuda test: the public index's CUDA build, for training on an NVIDIA GPU)
TORCH ?= cpu
# apt waits this long for the dpkg lock that another apt holds (a fresh cloud VM's at boot)
APT := apt-get -o DPkg::Lock::Timeout=600

.PHONY: setup system-packages test demo clean

system-packages:
	@if command -v apt-get >/dev/null; then \
	  need=""; for p in mosquitto mosquitto-clients dataset-fashion-mnist libgl1 libglib2.0-0 systemd openssl \
	    gir1.2-aravis-0.8 aravis-tools gcc python3-dev pkg-config libgirepository1.0-dev libcairo2-dev chromium chromium-driver; do \
	    dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	  if [ -n "$$need" ]; then echo "installing$$need"; \
	    $(SUDO) $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) $(APT) install -y -qq $$need >/dev/null; fi; \
	else echo "no apt-get: install mosquitto and Fashion-MNIST yourself"; fi

$(BIN)/.installed: pyproject.toml deploy/constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, the build TORCH names (cpu unless told), so nothing pulls another one
	sh deploy/install-torch.sh $(BIN)/pip $(TORCH)
	# genicam: PyGObject builds against libgirepository1.0-dev (Aravis's fake camera runs in the tests)
	$(BIN)/pip install -q -c deploy/constraints.txt -e '.[cpu,train,dev,openvino,genicam]'
	touch $@

setup: system-packages $(BIN)/.installed

test: setup
	$(BIN)/pytest -q

demo: setup
	$(BIN)/python -m examples.demo

clean:
	rm -rf $(VENV) demo runs .device-profile
