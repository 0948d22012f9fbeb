# hakvm: the two set-up commands are `make demo` and `make test` (fresh Debian 12, as root).
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages, by what needs them (README "What the two commands install").
# The demo: the lab (QEMU as an unprivileged user, debootstrap image, debugfs identity,
# the BMC daemons on Debian's python3 with pyghmi, the local package repository index, the
# quorum device's qnetd and the NSS tools its CA is made with: install-debs masks the
# corosync-qnetd service the package enables, the lab runs its own as the lab user).
DEMO_PACKAGES := python3-venv qemu-system-x86 qemu-utils debootstrap e2fsprogs util-linux \
	openssh-client dpkg-dev debian-archive-keyring iproute2 python3-pyghmi ipmitool \
	corosync-qnetd libnss3-tools
# The tests, for their binaries only (corosync -t, crm_verify, crm_simulate, drbdadm dump,
# virt-xml-validate, ifquery, nft -c, firewall-offline, pcs and crm offline, promtool check
# metrics/rules and test rules, resource-agents' ocf-shellfuncs under the carried fix;
# chromium for hakvm serve's browser tests, driven by Playwright from PyPI, whose own
# browser download cannot work here): tools/install-debs
# keeps every daemon they bring stopped, disabled and masked.
TEST_PACKAGES := corosync pacemaker pacemaker-cli-utils drbd-utils libvirt-clients \
	fence-agents libxml2-utils pcs crmsh ifupdown nftables python3-firewall python3-gi \
	gir1.2-nm-1.0 prometheus chromium resource-agents
STAMP := $(VENV)/.installed

.PHONY: deps deps-demo venv test test-fast test-e2e test-deploy test-drills lint demo bench clean

deps-demo:
	tools/install-debs $(DEMO_PACKAGES)

deps: deps-demo
	tools/install-debs $(TEST_PACKAGES)

$(STAMP): pyproject.toml | deps-demo
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# hakvm's own modules as bytecode: an editable install compiles none, and where
# PYTHONDONTWRITEBYTECODE is set (as on our CI host) every CLI start compiled them again:
# `hakvm status` paid for 28 modules. A stale .pyc costs nothing (Python sees the newer source
# and compiles in memory), so this runs on every make, incrementally.
venv: $(STAMP)
	$(BIN)/python -m compileall -q src/hakvm

# The browser test (chromium, 20 s) runs in make test only. Two workers (pytest-xdist): the
# unit and render tests are independent: on an idle 2-core host 142 s serially, 79 s so
# (2026-12-02, one run each); no gain while the lab's emulated guests take both cores.
test-fast: venv
	$(BIN)/pytest -q -n 2 -m "not e2e and not browser" tests/unit tests/render

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# Lint, then one pytest session: the unit and real-tool checks while the lab comes up in the
# background, then the lab (identity, LACP, BMCs, qnetd), the deploy of the quorum device's
# lab spec from bare (a killed apply and its re-run, a no-op re-apply) and read-only checks on
# that cluster (status, doctor, plan without secrets, migrate's refusals, the metrics textfile,
# guest isolation), last the device's three most telling drills; the lab is TCG-emulated: that
# is most of the time. Tests marked `extended` (the two_node cluster of make demo, its switch
# to the device, the node-crash failover and every other drill, the guards, drain, vm
# add/remove, the web view through a crash, ...) run in make test-e2e, which deploys
# examples/lab.yaml: docs/testing.md lists them with durations.
test: deps venv lint
	HAKVM_E2E_SPEC=lab-qdevice.yaml $(BIN)/pytest -q --durations=25 -m "not extended" tests

# End-to-end deploy and operate tests (a fresh lab, apply, failover, migrate, drain).
test-deploy: deps venv
	$(BIN)/pytest -q -m "deploy and not drill and not extended" tests/e2e

# Failure drills with the acknowledged-write witness, on a freshly deployed lab.
test-drills: deps venv
	$(BIN)/pytest -q tests/e2e -k "test_apply_killed or test_killed_node or test_drill"

# Every end-to-end test, extended ones included (hours here: the suite's 75-min budget,
# which guards CI's limit in make test, is lifted).
test-e2e: deps venv
	HAKVM_TEST_BUDGET_S=$${HAKVM_TEST_BUDGET_S:-21600} $(BIN)/pytest -q -m e2e tests/e2e

demo: deps-demo venv
	$(BIN)/hakvm demo examples/lab.yaml

bench: deps venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
