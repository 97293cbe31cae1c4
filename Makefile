# Weather Tweets. `make run` and `make test` work from a fresh clone with only python3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_SOURCES := src tests locustfile.py build_protos.py tools/dashboards.py tools/bench.py tools/k8s/strimzi_crds.py

.PHONY: install run test lint format unit e2e services services-down services-status chart browser k8s-up k8s-down k8s-status dashboards bench clean

install: $(STAMP)

$(STAMP): pyproject.toml build_protos.py src/weathertweets/proto/*.proto tools/assets/package-lock.json
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	tools/assets/vendor.sh
	@touch $(STAMP)

run: install
	$(BIN)/weathertweets up

lint: install
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

format: install
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

chart: install
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

bench: install
	$(BIN)/python tools/bench.py

dashboards: install
	$(BIN)/python tools/dashboards.py

services-down:
	tools/engines/services.sh down

services-status:
	tools/engines/services.sh status

unit: install
	$(BIN)/python -m pytest -q -m "not e2e"

e2e: install
	$(BIN)/python -m pytest -q -m e2e

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache src/weathertweets/proto/*_pb2*
