# Two commands matter: `make demo` and `make test`. Both create .venv when it is absent.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck contracts unit bench clean venv bench-optimize

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

venv: $(BIN)/python

# Stamps record what was installed, so a second run only reinstalls after pyproject.toml changes.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[sklearn]'
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[all,dev]'
	@touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/shipyard quickstart
	@echo ""
	@echo "The commands above run inside the virtual environment: source $(VENV)/bin/activate"

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest exits 5 when it collects nothing: that is a failure here, as any non-zero code is.
test: lint
	@bash scripts/install_chromium.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov --cov-report=term:skip-covered --cov-fail-under=80

# Server against the bare-handler floor (needs wrk and taskset; installed here when absent).
bench: $(VENV)/.test-installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/serve/run.py

# shipyard optimize on the synthetic-image CNN and the digits MLP, 1 and 2 threads.
bench-optimize: $(VENV)/.test-installed
	$(BIN)/python benchmarks/optimize/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
