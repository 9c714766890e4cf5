# The two set-up commands from the README. Each creates .venv when it is missing and installs
# with the pinned, tested versions in requirements/constraints.txt, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
DEMO_ARGS ?=

.PHONY: demo test lint bench bench-scaling install-dev browser

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

# Headless Chromium for the browser tests (Debian's package; playwright drives it, no browser download).
# Installed when missing and we are root; otherwise the browser tests skip (and fail under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and we are not root: the browser tests will skip (fail under CI=true)"; fi; }

test: $(DEV_STAMP) browser
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(PY) -m ruff check lightning_explain tests examples benchmarks
	$(PY) -m ruff format --check lightning_explain tests examples benchmarks
	$(PY) -m mypy

bench: $(DEV_STAMP)
	$(PY) benchmarks/bench_probe_pass.py

# How time and peak memory grow with probe, resolution and model (docs/guides/scaling.md). BENCH_SCALING_ARGS=
# (empty) runs the full grid: hours on a 2-core CPU.
BENCH_SCALING_ARGS ?= --quick
bench-scaling: $(DEV_STAMP)
	$(PY) benchmarks/bench_scaling.py $(BENCH_SCALING_ARGS) --markdown
