# Every target creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ivr demo

serve: $(STAMP)
	$(BIN)/ivr serve

test: $(STAMP)
	$(BIN)/ruff check ivr tests
	$(BIN)/mypy ivr
	$(BIN)/python -m ivr.flows.schema --check
	$(BIN)/ivr flows check flows/*.yaml
	$(BIN)/ivr flows test
	$(BIN)/pytest -q -p no:logging

lint: $(STAMP)
	$(BIN)/ruff check ivr tests
	$(BIN)/mypy ivr

bench: $(STAMP)
	$(BIN)/ivr bench accuracy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache
