# The two set-up commands from the README. Each creates .venv when it is missing and installs
# with the pinned, tested versions in requirements/constraints.txt, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
DEMO_ARGS ?=

.PHONY: demo test lint bench install-dev

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): $(PY) pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e .
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install-dev: $(DEV_STAMP)

demo: $(RUNTIME_STAMP)
	$(PY) examples/shortcut_detection.py $(DEMO_ARGS)

test: $(DEV_STAMP)
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(PY) -m ruff check lightning_explain tests examples benchmarks
	$(PY) -m ruff format --check lightning_explain tests examples benchmarks
	$(PY) -m mypy

bench: $(DEV_STAMP)
	$(PY) benchmarks/bench_probe_pass.py
