# ConstructOS ML platform — every entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
DATA_DIR  ?= data
HTTP_PORT ?= 8080
MODEL     ?= credit_risk
export CONSTRUCTOS_DATA_DIR ?= $(abspath $(DATA_DIR))

.PHONY: help install test test-unit lint fmt demo serve pipeline compile mlflow \
        kafka-up kafka-down trigger manifests-check bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet uv
	uv sync --frozen
	@touch $@

install: $(STAMP) ## build .venv from the lock file (uv)

test: $(STAMP) ## run every test (starts Kafka itself when a test needs it)
	$(PY) -m pytest

test-unit: $(STAMP) ## fast in-process tests only
	$(PY) -m pytest -m "not integration"

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
