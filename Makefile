# The two commands of the README:
#   make demo   — start a local Kafka broker and a rater worker, feed a demo tenant, show the output
#   make test   — install what is missing, then lint, type-check and run every test
# Everything installs into .venv/; the Kafka broker jars go to .cache/ (both git-ignored).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest install kafka-jars compose-schema bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

kafka-jars: $(STAMP)
	$(BIN)/python -m rater.localkafka fetch

compose-schema:
	tests/fetch-compose-schema.sh

demo: install kafka-jars
	$(BIN)/rater demo

lint: install
	$(BIN)/ruff check rater tests tools benchmarks
	$(BIN)/mypy

pytest: install kafka-jars compose-schema
	$(BIN)/python -m pytest

test: lint pytest

# Rating throughput of the core on one core, as a ratio against orjson.loads (not a test).
bench: install
	$(BIN)/python benchmarks/rating.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
