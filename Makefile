# Weather Tweets. `make run` and `make test` work from a fresh clone with only python3.11 and make.
PYTHON ?= $(shell (command -v python3.11 || command -v python3) | head -n 1)
# The interpreter itself, not a version manager's shim: uv compares venvs by it.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
VENV := .venv
BIN := $(VENV)/bin
# Python packages come from uv.lock (exact versions and hashes), installed by uv, itself pinned.
UV_VERSION := 0.13.8
TOOLS := .cache/tools
UV := $(TOOLS)/bin/uv
# Compiled at install, as in the image: a process that compiles its imports at start carries
# the compiler's memory too (6 MB for redis alone), and more when bytecode cannot be written.
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --inexact --compile-bytecode --python $(PYTHON_EXE)
RUNTIME_STAMP := $(VENV)/.runtime
DEV_STAMP := $(VENV)/.dev
DEPENDS := pyproject.toml uv.lock build_protos.py src/weathertweets/proto/*.proto
PY_SOURCES := src tests locustfile.py build_protos.py tools/dashboards.py tools/bench.py tools/bench_starlette.py tools/bench_archive.py tools/soak.py tools/k8s/strimzi_crds.py

.PHONY: install dev run test lint format unit e2e services services-down services-status chart browser k8s-up k8s-down k8s-status dashboards bench soak lock clean

install: $(RUNTIME_STAMP)
dev: $(DEV_STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# The runtime only (what `make run` needs); the dev tools come with `make test`.
$(RUNTIME_STAMP): $(DEPENDS) tools/assets/package-lock.json | $(UV)
	@test -x $(BIN)/python || $(UV) venv --seed --quiet --python $(PYTHON_EXE) $(VENV)
	$(SYNC) --reinstall-package weathertweets  # rebuilds the gRPC stubs from the .proto files
	tools/assets/vendor.sh
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(SYNC) --extra dev
	@touch $@

# After changing dependencies in pyproject.toml: resolve again, and export the image's pins.
lock: | $(UV)
	$(UV) lock --python $(PYTHON_EXE)
	$(UV) export --frozen --no-dev --extra locust --no-emit-project --quiet -o requirements/image.txt

run: install
	$(BIN)/weathertweets up

lint: dev
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

format: dev
	$(BIN)/ruff check --fix $(PY_SOURCES)
	$(BIN)/ruff format $(PY_SOURCES)

# The whole suite, real engines included (`make services` installs and starts them, `make k8s-up`
# a Kubernetes API server; they keep running afterwards). On a machine without them:
# `make test ENGINES=0` runs the rest.
# pytest exits 5 when it collected no tests: that is a broken suite here, never a pass.
ENGINES ?= 1
test: lint $(if $(filter 1,$(ENGINES)),chart services browser k8s-up)
	@WT_REQUIRE_ENGINES=$(ENGINES) $(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

services:
	tools/engines/services.sh up

chart: dev
	tools/chart/render.sh

browser:
	tools/browser/install.sh

# etcd + kube-apiserver on 127.0.0.1 (built with Go the first time), for the chart's server checks.
k8s-up:
	tools/k8s/cluster.sh up

k8s-down:
	tools/k8s/cluster.sh down

k8s-status:
	tools/k8s/cluster.sh status

# wrk against a bare server, `up` and `stack` on the real engines (started here when missing).
bench: dev services
	$(BIN)/python tools/bench.py

# `weathertweets up` left running at a steady rate: exactness, RSS/fd/thread trends, disk per
# million tweets, latency trend and a chart (build/soak/). E.g. make soak DURATION=1h RATE=1000
DURATION ?= 3m
RATE ?= 1000
soak: install
	$(BIN)/python tools/soak.py --duration $(DURATION) --rate $(RATE)

dashboards: dev
	$(BIN)/python tools/dashboards.py

services-down:
	tools/engines/services.sh down

services-status:
	tools/engines/services.sh status

unit: dev
	$(BIN)/python -m pytest -q -m "not e2e"

e2e: dev
	$(BIN)/python -m pytest -q -m e2e

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache src/weathertweets/proto/*_pb2*
