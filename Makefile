# Developer entry points. `make test` is the one command: it creates .venv and installs icefloe
# with its dev extras on first use (and again whenever pyproject.toml changes).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.icefloe-installed

.PHONY: venv test lint demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

test: venv
	$(BIN)/pytest -p no:cacheprovider -q -m "not spark"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: venv
	$(BIN)/icefloe demo
