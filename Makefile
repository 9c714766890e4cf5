# The two set-up commands from the README. Each creates .venv when it is missing and installs
# with the pinned, tested versions in requirements/constraints.txt, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
DEMO_ARGS ?=

.PHONY: demo test lint bench install-dev browser docs docs-serve tensorboard pictures dist mutation bench-shortcut bench-dashboard bench-scaling bench-long-run

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

test: $(DEV_STAMP) browser docs
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(PY) -m ruff check lightning_explain tests examples benchmarks scripts tools
	$(PY) -m ruff format --check lightning_explain tests examples benchmarks scripts tools
	$(PY) -m mypy

bench: $(DEV_STAMP)
	$(PY) benchmarks/bench_probe_pass.py

# The documentation site (mkdocs.yml, sources in docs/): built strictly (a broken link, a missing page or
# reference, or a docstring that does not parse fails) into site/. The examples in it run in the tests
# (tests/test_docs_examples.py).
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir site

docs-serve: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

# TensorBoard on the demo's logs (or LOGDIR=...), from the environment's own script: no activation needed.
LOGDIR ?= runs/shortcut_demo
tensorboard: $(RUNTIME_STAMP)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --samples_per_plugin images=1000

# Re-make every picture in docs/ (runs the demo, renders the report, screenshots it with headless Chromium).
pictures: $(DEV_STAMP) browser
	$(PY) scripts/docs_pictures.py

# The sdist and the wheel, into dist/.
dist: $(DEV_STAMP)
	$(PY) -m build --outdir dist .

# Plants plausible bugs in functional/ and the callbacks' option plumbing, one at a time, and runs the test files
# that should notice (tools/mutation.py). Not part of `make test`: it takes minutes per mutant.
mutation: $(DEV_STAMP)
	$(PY) tools/mutation.py

# FocusAlert on NaturalShortcut: 5 seeds x {shortcut, clean} x {CNN, ResNet-18, ViT}, masks / boxes / no masks.
# Long (see docs/guides/shortcuts_natural.md for the time it took); BENCH_SHORTCUT_ARGS=--quick for one CNN seed.
BENCH_SHORTCUT_ARGS ?=
bench-shortcut: $(DEV_STAMP)
	$(PY) benchmarks/bench_shortcut_detection.py $(BENCH_SHORTCUT_ARGS)

# The Explain dashboard: first paint of a 100-epoch x 16-image x 5-method run, TensorBoard start-up with and without
# the plugin, the HTML report's bytes per epoch (needs chromium: make browser).
bench-dashboard: $(DEV_STAMP) browser
	$(PY) benchmarks/bench_dashboard.py

# How time and peak memory grow with probe, resolution and model (docs/guides/scaling.md). BENCH_SCALING_ARGS=
# (empty) runs the full grid: hours on a 2-core CPU.
BENCH_SCALING_ARGS ?= --quick
bench-scaling: $(DEV_STAMP)
	$(PY) benchmarks/bench_scaling.py $(BENCH_SCALING_ARGS) --markdown

# 1,000 validation epochs of a tiny model with ExplainCallback() and FocusAlert: resident memory, open files,
# threads and event-file bytes per epoch (docs/guides/reliability.md, "Long runs"; ~5-10 min on 2 CPU cores).
BENCH_LONG_RUN_ARGS ?=
bench-long-run: $(DEV_STAMP)
	$(PY) benchmarks/bench_long_run.py $(BENCH_LONG_RUN_ARGS) --markdown
