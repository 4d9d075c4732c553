# Quantix OS — build, boot and test. Start with README.md.
#   make image        build the OS (disk image, ISO, update artifacts) into build/
#   make test         the whole test suite, e2e included (builds the image first)
#   make boot         boot build/*.raw in QEMU, serial console on this terminal (Ctrl-A X quits)
#   make boot-iso     the same with the ISO
#   make repro-check  build again and compare the root slot and UKI bit for bit
#   make size         artifact sizes and where the root's bytes go; fails when the update payload is over
#                     150 MB, naming what grew since image/size-record.json (RECORD=1 writes it)
#   make update-server  a local update server on the development keys of build/keys (what make image
#                     ships without TUF_ROOT); prints how to publish build/ to it
# Variables: ACCEL=auto|kvm|tcg (boot), MEMORY=MiB (boot), SECURITY_EPOCH=N (image), FAST=1 (image:
#            a development build, fast compression, same formats), FULL=1 (image: run mkosi even when
#            only our Python code changed; otherwise such a rebuild reuses the last build's tree),
#            TUF_ROOT=root.json (image: the update trust anchor; default: development keys in build/keys),
#            SB_KEY=db.key SB_CERT=db.crt (image: the Secure Boot signing pair; default: development
#            keys in build/keys/secureboot; docs/secure-boot.md),
#            UPDATE_LISTEN=127.0.0.1:8400 (update-server), RECORD=1 (size), PYTEST_ARGS=...,
#            TEST_WORKERS=2 (test: pytest workers; 1 runs one process, see the test target)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV := .venv
PY := $(VENV)/bin/python
QXB := $(VENV)/bin/qx-build
ACCEL ?= auto
MEMORY ?= 3072
SECURITY_EPOCH ?= 0
TUF_ROOT ?=
SB_KEY ?=
SB_CERT ?=
UPDATE_LISTEN ?= 127.0.0.1:8400
FAST ?=
FULL ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

ifeq ($(filter $(ACCEL),auto kvm tcg),)
$(error ACCEL=$(ACCEL) is not one of: auto kvm tcg (e.g. make boot ACCEL=tcg))
endif
ifeq ($(shell [[ "$(MEMORY)" =~ ^[0-9]+$$ ]] && echo ok),)
$(error MEMORY=$(MEMORY) is not a number of MiB (e.g. make boot MEMORY=4096))
endif
ifeq ($(shell [[ "$(TEST_WORKERS)" =~ ^[1-9][0-9]*$$ ]] && echo ok),)
$(error TEST_WORKERS=$(TEST_WORKERS) is not a number of pytest workers >= 1 (e.g. make test TEST_WORKERS=1))
endif
ifeq ($(shell [[ "$(SECURITY_EPOCH)" =~ ^[0-9]+$$ ]] && echo ok),)
$(error SECURITY_EPOCH=$(SECURITY_EPOCH) is not a whole number >= 0)
endif

.PHONY: help image test unit e2e boot boot-iso repro-check size update-server host-deps host-deps-test venv lock clean \
        web-assets web-assets-check

help:
	@sed -n '2,19p' Makefile | sed 's/^# \{0,1\}//'

host-deps:
	@image/host-deps.sh build

host-deps-test:
	@image/host-deps.sh test

# The venv is rebuilt when the lock or the project definition changes.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "‣ venv: installing the locked Python dependencies (requirements.lock, hash-checked)"
	@python3 -m venv $(VENV) || { echo "make: error: python3 -m venv failed" >&2; echo "make: hint: apt-get install python3-venv" >&2; exit 3; }
	@$(VENV)/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	@$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

image: host-deps venv
	@$(QXB) image --security-epoch $(SECURITY_EPOCH) $(if $(TUF_ROOT),--tuf-root $(abspath $(TUF_ROOT))) \
	    $(if $(SB_KEY),--sb-key $(abspath $(SB_KEY))) $(if $(SB_CERT),--sb-cert $(abspath $(SB_CERT))) $(if $(FAST),--fast) $(if $(FULL),--full)

# The development keys are made here too when no image was built yet (the same build/keys).
update-server: venv
	@$(QXB) dev-keys >/dev/null
	@$(VENV)/bin/qx-update-server dev --keys build/keys --data-dir build/update-server --listen $(UPDATE_LISTEN)

repro-check: host-deps venv
	@$(QXB) repro-check

size: venv
	@$(QXB) size $(if $(RECORD),--record)

boot: venv
	@$(QXB) boot --accel $(ACCEL) --memory $(MEMORY)

boot-iso: venv
	@$(QXB) boot --iso --accel $(ACCEL) --memory $(MEMORY)

# The whole suite. The image is built first (incremental when nothing changed); e2e tests boot it.
# --durations: the slowest tests are named at the end of every run (where the suite's time goes).
# TEST_WORKERS=2 runs pytest-xdist workers: tests/conftest.py puts every test that boots QEMU in one group,
# which one worker runs first while the other takes the rest, then the short QEMU scenarios (group qemu-late,
# queued last); --no-loadscope-reorder keeps that order (xdist's default hands out the biggest groups first). tests/test_suite_plan.py checks this
# plan on the real suite. Two workers are the default since a fresh-clone run passed with them
# (docs/performance.md, "Test suite wall time with two workers"); TEST_WORKERS=1 gives one process.
XDIST_PLAN := --dist loadgroup --no-loadscope-reorder
test: host-deps-test venv image
	@$(PY) -m pytest --durations=25 $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) $(XDIST_PLAN)) $(PYTEST_ARGS)

# Faster loops while developing: only unit/integration tests, or only e2e.
unit: host-deps-test venv
	@$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

# qx-node's web client: copy the npm libraries of services/qx_node/web/package-lock.json into its vendor/
# (committed; only needed after a version change, and only this needs npm: apt-get install npm).
web-assets:
	@services/qx_node/web/vendor.sh

web-assets-check:
	@services/qx_node/web/vendor.sh --check

e2e: host-deps-test venv
	@$(PY) -m pytest -m e2e $(PYTEST_ARGS)

# Regenerate the locks from pyproject.toml (needs network to PyPI).
lock: venv
	@$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra build --extra postgres --extra server --extra publish --generate-hashes \
	    --python-version 3.11 --universal -o requirements.lock -q
	@$(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --python-version 3.13 \
	    --python-platform x86_64-manylinux_2_28 --no-emit-package libvirt-python --no-emit-package netifaces \
	    -o image/requirements-image.lock -q

clean:
	rm -rf build/.work/disk build/.work/live build/.work/repro build/.work/out build/quantix-os_* build/SHA256SUMS
