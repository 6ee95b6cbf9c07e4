# Common commands. `make dev` sets everything up and runs it; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Every install uses the versions CI tested (the build backend's too); see README, "Quick start" (constraints.txt).
PIP = PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/pip

.PHONY: install dev test lint bench clean constraints

$(BIN)/qrq: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(BIN)/qrq

dev: install
	$(BIN)/qrq dev

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

# Every benchmark in bench/ with its baseline, then the summary table (BENCHMARKS.md).
# QUICK=1: small sizes, a few minutes. Each script takes /tmp/qrq-bench.lock while it runs.
bench: install
	$(BIN)/python bench/summary.py $(if $(QUICK),--quick)

# Refresh constraints.txt on purpose: the newest releases setup.cfg allows, in a fresh
# venv without constraints. Then run `make test` and commit the file with the result.
constraints:
	rm -rf .venv-fresh
	$(PYTHON) -m venv .venv-fresh
	.venv-fresh/bin/pip install --quiet --upgrade pip setuptools wheel
	.venv-fresh/bin/pip install --quiet -e '.[test]'
	{ sed -n '/^#/p' constraints.txt; \
	  .venv-fresh/bin/pip freeze --all --exclude-editable | grep -E '^(pip|setuptools|wheel)=='; \
	  .venv-fresh/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-fresh

clean:
	rm -rf $(VENV) build *.egg-info
