# Fleetwarden: `make synth` and `make test` are the whole quick start. Every target installs
# what it needs (a .venv from the requirements files, the CDK CLI pinned in package-lock.json)
# and is safe to rerun; installs are redone only when their inputs change.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
STAGE ?= dev
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk

# Offline-friendly CDK/jsii: no EC2 metadata probing for credentials, no version checks, and
# no jsii banner about Node.js 20 (harmless, and it buries real output).
export AWS_EC2_METADATA_DISABLED := true
export CDK_DISABLE_VERSION_CHECK := true
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: help synth test lint deploy diff diagram bench clean layers mosquitto demo

help:
	@echo "make demo    one device's whole life on this machine: moto server + mosquitto + the real agent (no AWS account)"
	@echo "make synth   synthesise every stack of STAGE=$(STAGE) into cdk.out with the security checks"
	@echo "make test    run the whole test suite (what CI runs)"
	@echo "make deploy  cdk deploy --all to the account in your AWS credentials (cdk bootstrap first)"
	@echo "make diff    cdk diff --all against the deployed stacks"
	@echo "make lint    cfn-lint over cdk.out"
	@echo "make bench   time make synth (warm) and make test; see bench/README.md"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.synth-deps: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@ $(VENV)/.synth-deps

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is required (install Node.js 20+)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Lambda layers built from manylinux wheels with pip, no Docker (stacks/platform/layers.py); synthesis
# builds them on first use too, then stays offline.
layers: $(VENV)/.synth-deps
	$(PY) -m stacks.platform.layers

synth: $(VENV)/.synth-deps node_modules/.installed
	$(CDK) synth --quiet -c stage=$(STAGE)
	@echo "Synthesised $(STAGE) into cdk.out: security checks passed."

lint: synth $(VENV)/.dev-deps
	$(VENV)/bin/cfn-lint

# The device tests run the agent against a real mosquitto (Debian's package). Installed here when missing and
# we are root on Debian (CI); its system service is stopped and disabled: each test starts its own broker on a
# loopback port. Otherwise one line says how, and those tests skip saying the same.
mosquitto:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing mosquitto (apt) for the device tests and the demo"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
		(systemctl disable --now mosquitto || service mosquitto stop) >/dev/null 2>&1 || true; \
	else echo "mosquitto is missing: sudo apt-get install -y mosquitto (device tests skip without it)"; fi

# Synthesises every stack with the security checks first (as make synth), then runs the lifecycle (tests/demo).
demo: $(VENV)/.dev-deps node_modules/.installed mosquitto synth
	$(PY) -m tests.demo

test: $(VENV)/.dev-deps node_modules/.installed mosquitto
	$(PY) -m pytest

deploy: $(VENV)/.synth-deps node_modules/.installed
	$(CDK) deploy --all -c stage=$(STAGE)

diff: $(VENV)/.synth-deps node_modules/.installed
	$(CDK) diff --all -c stage=$(STAGE)

diagram: $(VENV)/.dev-deps
	@command -v dot >/dev/null || { echo "Graphviz is required: apt-get install graphviz"; exit 1; }
	dot -Tpng -Gdpi=110 docs/architecture.dot -o docs/architecture.png

bench: $(VENV)/.dev-deps node_modules/.installed
	$(PY) bench/bench_commands.py

clean:
	rm -rf cdk.out .pytest_cache
