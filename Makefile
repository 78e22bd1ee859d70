# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set up everything and run the agent on a demo stream (see README)
#   make test   set up everything and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages test demo clean

system-packages:
	@if command -v apt-get >/dev/null; then \
	  need=""; for p in mosquitto mosquitto-clients dataset-fashion-mnist libgl1 libglib2.0-0 systemd openssl chromium chromium-driver; do \
	    dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	  if [ -n "$$need" ]; then echo "installing$$need"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$need >/dev/null; fi; \
	else echo "no apt-get: install mosquitto and Fashion-MNIST yourself"; fi

$(BIN)/.installed: pyproject.toml deploy/constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c deploy/constraints.txt -e '.[cpu,train,dev]'
	touch $@

setup: system-packages $(BIN)/.installed

test: setup
	$(BIN)/pytest -q

demo: setup
	$(BIN)/python -m ganomaly_edge.tools.demo

clean:
	rm -rf $(VENV) demo runs .device-profile
