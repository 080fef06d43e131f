# Every target creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test test-pg lint typecheck bench clean

# The PostgreSQL server `make test-pg` runs the suite against (a database per run is made
# and dropped on it).
PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

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

# The suite with the PostgreSQL tests on, and every test server's store on PostgreSQL
# (IVR_DB: a fresh schema each, in a database of the run's own): fails, never skips,
# when no server answers.
test-pg: $(STAMP)
	$(BIN)/python tests/pg_ready.py '$(PG_URL)'
	IVR_TEST_DATABASE_URL='$(PG_URL)' IVR_DB='$(PG_URL)' $(BIN)/pytest -q -p no:logging

lint: $(STAMP)
	$(BIN)/ruff check ivr tests
	$(BIN)/mypy ivr

bench: $(STAMP)
	$(BIN)/ivr bench accuracy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache
