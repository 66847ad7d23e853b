# Two entry points (see README): `make demo` and `make test` (lint, import contracts, tests). Both create .venv and install
# everything they need; on machines without an NVIDIA GPU the CPU build of torch is installed first.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU_VERSION ?= 2.13.0

.PHONY: setup browser relion demo lint test clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing default (CUDA) torch"; \
	else \
	  echo "No GPU: installing CPU build of torch"; \
	  $(PY) -m pip install -q "torch==$(TORCH_CPU_VERSION)" || \
	  $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# Debian's Chromium for the dashboard's browser test (Playwright drives /usr/bin/chromium; it
# cannot download browsers). Best effort: without it that test is skipped, set-up goes on.
browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the dashboard browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	      >/dev/null 2>&1 || echo "could not install chromium: the browser test will be skipped"; }

# Debian's RELION (relion_refine, relion_star_handler, relion_image_handler) for the
# interoperability tests. Best effort: without it those tests are skipped, set-up goes on.
relion:
	@command -v relion_refine >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { echo "installing Debian's relion for the interoperability tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq relion; } \
	      >/dev/null 2>&1 || echo "could not install relion: the RELION tests will be skipped"; }

demo: setup
	$(VENV)/bin/cryoclass demo --out demo_out

# ruff (lint rules and import order in pyproject.toml; the formatter's layout on src and tests)
# and import-linter (the package's layers, no cycles): CI fails on a broken layer or unformatted
# code before any test runs.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/lint-imports

test: setup browser relion lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out
