# Two entry points, each doing all of its own set-up from a clean checkout:
#   make quickstart   install into .venv, then run the quick start on the embedded real sample
#   make test         install into .venv, then run the test suite
# Everything is installed with the exact versions in constraints.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
export CXRAUG_DATA_ROOT ?= $(abspath $(DATA))

.PHONY: install quickstart test test-all bench-ci clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[offline,metrics,dev]"
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/cxraug quickstart

test: install
	$(BIN)/python -m pytest -q -m "not slow" --timeout=600

bench-ci: install
	$(BIN)/python benchmarks/ci.py --work .cache/ci-bench

test-all: install
	$(BIN)/python -m pytest -q --timeout=1800

clean:
	rm -rf $(VENV) .pytest_cache
