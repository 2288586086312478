# The two commands of the README:
#   make demo   — start a local Kafka broker and a rater worker, feed a demo tenant, show the output
#   make test   — install what is missing, then lint, type-check and run every test
# Everything installs into .venv/; the Kafka broker jars go to .cache/ (both git-ignored).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CORE_SOURCES := $(wildcard rater/core/*.py) tools/compile_core.py
COMPILED := .cache/compiled/manifest.json

.PHONY: demo test lint pytest install core kafka-jars compose-schema bench bench-stream sizing clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The rating core compiled with mypyc (tools/compile_core.py); rebuilt when a source changes.
$(COMPILED): $(STAMP) $(CORE_SOURCES)
	$(BIN)/python tools/compile_core.py

core: $(COMPILED)

kafka-jars: $(STAMP)
	$(BIN)/python -m rater.localkafka fetch

compose-schema:
	tests/fetch-compose-schema.sh

demo: install core kafka-jars
	$(BIN)/rater demo

lint: install
	$(BIN)/ruff check rater tests tools benchmarks
	$(BIN)/mypy

# Every test on the compiled core, then the core's own tests once more on the pure modules.
pytest: install core kafka-jars compose-schema
	$(BIN)/python -m pytest
	RATER_PURE=1 $(BIN)/python -m pytest -q tests/core tests/test_compiled_core.py

test: lint pytest

# Rating throughput of the core on one core, as a ratio against orjson.loads (not a test).
bench: install core
	$(BIN)/python benchmarks/rating.py

# What counting for the metrics costs the decision's CPU, against the same batches uncounted (not a test).
bench-metrics: install core
	$(BIN)/python benchmarks/metrics_cost.py

# The worker on a real broker against a bare aiokafka pass-through and a Faust agent doing the
# same work (not a test; ≈ 20-40 min on a busy 2-CPU VM). ARGS="--cdrs 50000 --faust" for less.
bench-stream: install core kafka-jars
	$(BIN)/python benchmarks/streaming.py $(ARGS)

# Peak RSS, SIGTERM-to-exit time and restore rate of one real worker, for deploy sizing
# (docs/deploying.md; not a test; ≈ 8 min). ARGS="--tenants 200 --cdrs 20000" for a quick run.
sizing: install core kafka-jars
	$(BIN)/python benchmarks/sizing.py $(ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
