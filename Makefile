# tokenmill: `make demo` sets up and runs the main job on the sample corpus; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_DISABLE_IMPORT_WARNING ?= 1

.PHONY: setup demo test test-slow lint format bench-env clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) check
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/tokenmill demo

test: setup
	$(PY) -m pytest -q -m "not slow" --timeout=900 tests

test-slow: setup
	$(PY) -m pytest -q -m slow --timeout=1800 tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) out .pytest_cache
