# Every target creates the venv when missing and installs the project into it.
# The venv belongs to one interpreter: the default python3 uses .venv, any other
# gets its own beside it (`make test PYTHON=python3.13` builds and uses .venv-3.13).
PYTHON ?= python3
PY_TAG := $(subst python,,$(notdir $(PYTHON)))
ifeq ($(PYTHON),python3)
VENV ?= .venv
else
VENV ?= .venv-$(if $(PY_TAG),$(PY_TAG),other)
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test test-pg lint typecheck bench clean deploy-flows

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

# On a new ./ivr.db the server seeds the demo business (services, accounts, orders) the
# shipped flows use, so a call can book a cleaning at once; IVR_DEMO_SEED=0 starts it empty.
serve: $(STAMP)
	$(BIN)/ivr serve

test: $(STAMP)
	$(BIN)/ruff check ivr tests
	$(BIN)/mypy ivr
	$(BIN)/python -m ivr.flows.schema --check
	$(BIN)/ivr flows check flows/*.yaml
	$(BIN)/ivr flows test
	$(BIN)/pytest -q -p no:logging

# `make test` with the PostgreSQL tests on, and every test server's store on PostgreSQL
# (IVR_DB: a fresh schema each, in a database of the run's own): fails, never skips,
# when no server answers.
test-pg: $(STAMP)
	$(BIN)/python tests/pg_ready.py '$(PG_URL)'
	IVR_TEST_DATABASE_URL='$(PG_URL)' IVR_DB='$(PG_URL)' $(MAKE) test PYTHON='$(PYTHON)' VENV='$(VENV)'

lint: $(STAMP)
	$(BIN)/ruff check ivr tests
	$(BIN)/mypy ivr

bench: $(STAMP)
	$(BIN)/ivr bench accuracy

# kustomize reads no file outside deploy/kubernetes: the ConfigMap's flows are a copy
# (tests/unit/test_deploy.py fails when it drifts from flows/).
deploy-flows:
	rm -f deploy/kubernetes/flows/*.yaml
	cp flows/*.yaml deploy/kubernetes/flows/

clean:
	rm -rf .venv .venv-* *.egg-info .pytest_cache .mypy_cache
