# aiorch developer entry points. `make demo` and `make test` are the two set-up commands.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := podman runc crun debootstrap openssh-client nftables uidmap gnupg dpkg-dev chromium prometheus ipmitool dnsmasq-base ipxe qemu-system-x86 ipxe-qemu socat jq mmdebstrap fdisk ovmf dosfstools mtools
DATA_DIR ?= $(CURDIR)/.data/demo

.PHONY: install system-deps demo demo-down test test-unit test-e2e test-lab lint lock bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || PY=python3; \
	[ -x $(BIN)/python ] || $${PY:-$(PY)} -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[hub,dev]'
	touch $(STAMP)

# The lab needs root and a few system packages; installed only when missing.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "aiorch lab needs root to install:$$missing (run: sudo apt-get install -y$$missing)"; exit 1; fi; \
	  echo "installing system packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install system-deps
	$(BIN)/python -m aiorch.demo --data-dir $(DATA_DIR)

demo-down: install
	$(BIN)/python -m aiorch.demo --data-dir $(DATA_DIR) --down

# Tiers by marker (tests/tiers.py): unit (no hub, no lab), e2e (a real hub under uvicorn), lab
# (podman hosts). `test` and `test-lab` need the lab: a missing prerequisite fails, never skips.
# Two workers (xdist): the lab tier runs in order on one, the unit and e2e tiers beside it.
TEST_WORKERS ?= 2

test: install system-deps
	AIORCH_REQUIRE_LAB=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

test-unit: install
	$(BIN)/pytest -q -m "not lab and not e2e"

test-e2e: install
	$(BIN)/pytest -q -m "e2e and not lab"

test-lab: install system-deps
	AIORCH_REQUIRE_LAB=1 $(BIN)/pytest -q -m lab

lint: install
	$(BIN)/ruff check aiorch edge_agent tests benchmarks
	$(BIN)/ruff format --check aiorch edge_agent tests benchmarks
	$(BIN)/mypy aiorch edge_agent
	@if [ -d playbooks/roles ]; then $(BIN)/ansible-lint --profile production playbooks; fi

# Re-resolve the agent's and the hub's wheels (amd64, arm64) and pin them (constraints/*.txt).
lock: install
	$(BIN)/aiorch repo lock

bench: install system-deps
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
