# Developer entry points. `make test` is the one command: it creates .venv and installs icefloe
# with its dev extras on first use (and again whenever pyproject.toml changes).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.icefloe-installed

.PHONY: venv test test-spark lint demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

test: venv
	$(BIN)/pytest -p no:cacheprovider -q -m "not spark"

# The Spark engine's tests: the Spark Connect client in .venv (extra `spark`), and a real local
# Spark Connect server whose pyspark venv and jars are cached in ICEFLOE_SPARK_CACHE (installed
# there with pip and mvn on first use; kept between runs on the same machine).
ICEFLOE_SPARK_CACHE ?= $(HOME)/.cache/icefloe/spark
test-spark: venv
	$(BIN)/python -m pip install -q -e '.[dev,spark]'
	ICEFLOE_SPARK_CACHE=$(ICEFLOE_SPARK_CACHE) $(BIN)/icefloe spark-server install
	ICEFLOE_SPARK_CACHE=$(ICEFLOE_SPARK_CACHE) $(BIN)/pytest -p no:cacheprovider -q -m spark tests/engines --durations=10

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: venv
	$(BIN)/icefloe demo
