# Two commands set everything up on a fresh machine with Python 3.10+:
#   make run   - create .venv with what the service needs, index reference_images/ and serve
#                them on http://127.0.0.1:8000
#   make test  - add the test and lint tools to .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CATALOG ?= imgmatch-data
HOST ?= 127.0.0.1
PORT ?= 8000
# Serving needs the runtime dependencies only; the developer tools (a browser driver among
# them) are several times their size.
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: run test lint samples venv clean

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV)

venv: $(DEV)

run: $(RUNTIME)
	$(BIN)/imgmatch index reference_images --catalog $(CATALOG)
	@echo "imgmatch service: http://$(HOST):$(PORT)"
	$(BIN)/imgmatch serve --catalog $(CATALOG) --host $(HOST) --port $(PORT)

# Counterfeit-style listings made from the bundled references, checked from the command line.
samples: $(RUNTIME)
	$(BIN)/imgmatch index reference_images --catalog $(CATALOG)
	$(BIN)/python -m imgmatch.bench.samples --out $(CATALOG)/sample-listings
	$(BIN)/imgmatch check $(CATALOG)/sample-listings --catalog $(CATALOG)

test: $(DEV)
	$(BIN)/python -m pytest -q

lint: $(DEV)
	$(BIN)/ruff check imgmatch service tests
	$(BIN)/ruff format --check imgmatch service tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(CATALOG) .pytest_cache .mypy_cache .ruff_cache
