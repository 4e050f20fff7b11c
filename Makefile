# Two commands set everything up on a fresh machine with Python 3.10+:
#   make run   - create .venv, index reference_images/ and serve them on http://127.0.0.1:8000
#   make test  - create .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CATALOG ?= imgmatch-data
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test lint samples venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/imgmatch index reference_images --catalog $(CATALOG)
	@echo "imgmatch service: http://$(HOST):$(PORT)"
	$(BIN)/imgmatch serve --catalog $(CATALOG) --host $(HOST) --port $(PORT)

# Counterfeit-style listings made from the bundled references, checked from the command line.
samples: $(STAMP)
	$(BIN)/imgmatch index reference_images --catalog $(CATALOG)
	$(BIN)/python -m imgmatch.bench.samples --out $(CATALOG)/sample-listings
	$(BIN)/imgmatch check $(CATALOG)/sample-listings --catalog $(CATALOG)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check imgmatch service tests
	$(BIN)/ruff format --check imgmatch service tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(CATALOG) .pytest_cache .mypy_cache .ruff_cache
