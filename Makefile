# Two entry points for a fresh Debian machine, as root:
#   make demo   set up, then run the lab: VIP failover measured, torn down
#   make test   set up, then lint, type-check and run every test
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
APT_PACKAGES := keepalived haproxy curl iproute2 procps nftables python3 python3-venv \
	podman runc debootstrap python3-prometheus-client prometheus openssl nghttp2-client \
	libyang2 libc-ares2 libjson-c5 libreadline8 libcap2
OUT ?= out

.PHONY: all demo test lint unit render bench bench-changes bench-bgp bench-stall bench-tls mutate mutate-sample system-deps deps clean

all: test

system-deps:
	@missing=""; \
	for bin in keepalived haproxy curl ip pgrep nft python3 podman runc debootstrap promtool openssl h2load; do command -v $$bin >/dev/null || missing=1; done; \
	/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || missing=1; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing=1; \
	for lib in libyang.so.2 libcares.so.2 libjson-c.so.5; do ldconfig -p | grep -q "$$lib" || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing $(APT_PACKAGES) (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

# cert-manager's Certificate schema, as a validator compiled from its CRD (tests/k8s_schema.py).
CERT_MANAGER_MODELS := @kubernetes-models/cert-manager@6.0.0
NODE_DIR := $(VENV)/node

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | system-deps
	@echo "==> creating $(VENV) and installing Python dependencies, and this project (the halb command)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null)
	@npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) $(CERT_MANAGER_MODELS) >/dev/null
	@# Debian's nginx, unpacked, not installed (its package would start a server on :80 of this
	@# machine): the app stand-in of the data-path benchmarks (HALB lab app "nginx").
	@test -x $(VENV)/nginx/usr/sbin/nginx || (cd $(VENV) && (apt-get download nginx >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get download nginx >/dev/null)) && dpkg -x nginx_*.deb nginx && rm -f nginx_*.deb)
	@touch $(STAMP)

# FRR unpacked the same way (its package would start zebra and bgpd on this machine):
# tests check every rendered frr.conf with its `vtysh -C`.
VTYSH := $(VENV)/frr/usr/bin/vtysh
$(VTYSH): | $(STAMP)
	@cd $(VENV) && (apt-get download frr >/dev/null 2>&1 || (apt-get update -qq && apt-get download frr >/dev/null)) \
	  && rm -rf frr && dpkg -x frr_*.deb frr && rm -f frr_*.deb

deps: system-deps $(STAMP) $(VTYSH)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: deps
	$(PY) -m pytest

test: lint unit

render: deps
	$(VENV)/bin/halb render --stack $(STACK) --out $(OUT)/$(STACK)

demo: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root (network namespaces)"; exit 1; fi
	@$(VENV)/bin/halb demo

# The full failover benchmark (~25 min): every fault, both profiles, CPU-load phase.
RUNS ?= 5
bench: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make bench needs root (network namespaces)"; exit 1; fi
	$(VENV)/bin/halb bench failover --runs $(RUNS) --json docs/failover.json \
	    --markdown docs/failover-table.md --chart docs/failover.png

# Failed requests and VIP moves across changes (~25 min): this project vs the baseline.
bench-changes: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-changes needs root (network namespaces)"; exit 1; fi
	$(VENV)/bin/halb bench changes --runs $(RUNS) --json docs/changes.json \
	    --markdown docs/changes-table.md --chart docs/changes.png

# HTTPS (~15 min): handshakes, HTTPS vs HTTP, renewals under load, resumption across faults.
# The BGP mode (issue 23): scale-out over 1-3 hosts, failover beside VRRP's (~15 min).
bench-bgp: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-bgp needs root (network namespaces)"; exit 1; fi
	$(VENV)/bin/halb bench bgp --runs $(RUNS) --json docs/bgp.json --markdown docs/bgp-table.md --chart docs/bgp.png

# Stall tolerance (~20 min): 150 ms stalls and link jitter, BFD timers swept, VRRP beside it.
bench-stall: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-stall needs root (network namespaces)"; exit 1; fi
	$(VENV)/bin/halb bench stall --runs $(RUNS) --json docs/stall.json --markdown docs/stall-table.md --chart docs/stall.png

bench-tls: deps
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-tls needs root (network namespaces)"; exit 1; fi
	$(VENV)/bin/halb bench tls --json docs/tls.json --markdown docs/tls-table.md --chart docs/tls.png

# Mutation testing (docs/mutation.md); not in CI: slow (hours for all of components/ on
# a shared 2-core machine: scope it). Without MUTANTS it checks the mutants not yet
# checked (results are kept in mutants/); MUTANTS='components.settings*' re-checks those.
MUTANTS ?=
MUTATE_JOBS ?= 2
mutate: deps
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(PY) tests/mutation_report.py --require components=90

# A seeded random sample of components/ (the whole takes about 5 hours here):
# every verdict is forgotten first, so the report is the sample's. On a fresh
# checkout a run that matches no mutant generates them first (and maps the tests).
SAMPLE ?= 600
SEED ?= 14
mutate-sample: deps
	test -d mutants || env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) 'components.none-yet*' || test -d mutants
	$(PY) tests/mutation_report.py --forget
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) \
	  $$($(PY) tests/mutation_report.py --sample $(SAMPLE) --seed $(SEED))
	$(PY) tests/mutation_report.py --require components=90

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache .hypothesis
