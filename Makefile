# `make run`: index the bundled references and serve them on http://127.0.0.1:8000.
PYTHON ?= .venv/bin/python
IMGMATCH ?= .venv/bin/imgmatch
CATALOG ?= imgmatch-data

.PHONY: run test

run:
	$(IMGMATCH) index reference_images --catalog $(CATALOG)
	@echo "imgmatch service: http://127.0.0.1:8000"
	$(IMGMATCH) serve --catalog $(CATALOG) --host 127.0.0.1 --port 8000

test:
	$(PYTHON) -m pytest
