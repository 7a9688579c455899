# Developer entry points. `make test` is the one command: it creates .venv and installs icefloe
# with its dev extras on first use (and again whenever pyproject.toml changes). `make demo` needs
# only the runtime dependencies (and the embedded S3): it installs those, quietly, when missing.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.icefloe-installed
RUNTIME_STAMP := $(VENV)/.icefloe-runtime

.PHONY: venv test test-fast test-spark lint demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make demo: installing icefloe and its runtime dependencies into $(VENV) (first run only)..."
	@# uv installs the ~50 runtime packages in seconds where pip takes a minute; pip if uv fails.
	@( $(BIN)/python -m pip install -q --disable-pip-version-check uv \
	   && $(BIN)/uv pip install -q --python $(BIN)/python -e '.[embedded-s3]' ) \
	 || $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[embedded-s3]'
	@touch $@

test: venv
	$(BIN)/pytest -p no:cacheprovider -q -m "not spark" --durations=25

# The inner loop (under a minute): unit tests and the API in process (auth, errors, pagination)
# against the real PostgreSQL; no uvicorn subprocess, no workers, no fault injection.
test-fast: venv
	$(BIN)/pytest -p no:cacheprovider -q -m "not spark and not server" tests/unit tests/api

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

demo: $(RUNTIME_STAMP)
	@$(BIN)/icefloe demo
