# tokenmill: `make demo` sets up and runs the main job on the sample corpus; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Where torch comes from: pip's configured index by default (plain PyPI's Linux wheel is the CUDA
# build, several GB); e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` for CPU.
TORCH_INDEX ?=
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_DISABLE_IMPORT_WARNING ?= 1

.PHONY: setup demo test test-slow lint format bench-corpus bench-env bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e '.[dev,export-check]'
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

# Benchmarks (not tests): a ~160 MB corpus from Debian packages, and a separate venv for peers.
BENCH_CORPUS := $(or $(TMPDIR),/tmp)/tokenmill-bench-corpus/corpus
bench-corpus:
	test -f $(BENCH_CORPUS)/en.jsonl || (apt-get update -qq && bash bench/build_corpus.sh)

.venv-bench/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q --upgrade pip
	.venv-bench/bin/pip install -q torch==2.13.0
	# litdata (loader benchmark) needs torchvision: pinned to the release made for torch 2.13, or pip
	# would replace the CPU torch with a newer CUDA build (litdata's token path never imports it)
	.venv-bench/bin/pip install -q -e '.[dev]' 'datatrove[io]' 'litdata==0.2.76' 'torchvision==0.28.0'
	.venv-bench/bin/pip check
	touch $@

bench-env: .venv-bench/.installed

bench: setup bench-env bench-corpus
	$(PY) bench/pipeline_throughput.py

clean:
	rm -rf $(VENV) out .pytest_cache
