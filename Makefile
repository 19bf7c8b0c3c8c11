# fhirbots — one entry point for every chore. `make serve` and `make test` are all a newcomer needs.
# Everything runs from a project virtual environment, .venv/, made once from $(PYTHON): nothing is
# installed into that interpreter (a distribution's python3 refuses pip installs, PEP 668).
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# Made after a successful install; pyproject.toml as its prerequisite reinstalls on a change there.
INSTALLED := $(VENV)/.installed
# Extra arguments for `fhirbots serve`, e.g. make serve ARGS="--port 18080".
ARGS ?=
# deploy/venv.sh flags; `test` sets --install-missing.
VENV_FLAGS :=
TEST_DATABASE_URL := postgresql://fhirbots:fhirbots@127.0.0.1:5432/fhirbots_test

.PHONY: install install-test-services lint format types unit deploy-check test serve bench clean

$(VPY):
	bash deploy/venv.sh $(VENV_FLAGS) $(PYTHON) $(VENV)

$(INSTALLED): pyproject.toml | $(VPY)
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(INSTALLED) ## Python package and dev tools (editable), in .venv

install-test-services: ## PostgreSQL (Debian package, started), the Kafka jars (Maven), Chromium (Debian package)
	bash deploy/postgres/setup.sh
	bash deploy/kafka/broker.sh fetch
	bash deploy/browser/setup.sh

lint: $(INSTALLED) ## ruff lint and format check, import layering (import-linter)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: $(INSTALLED) ## apply ruff formatting and fixes
	$(VPY) -m ruff format .
	$(VPY) -m ruff check --fix .

types: $(INSTALLED) ## mypy strict
	$(VPY) -m mypy

unit: $(INSTALLED) ## tests without services
	$(VPY) -m pytest -m "not integration" -q

deploy-check: $(INSTALLED) ## the Dockerfile, compose files and Helm chart, checked without Docker or a cluster (Go)
	bash deploy/checks/run.sh

# `test` installs system packages anyway (PostgreSQL), so it may also add the interpreter's
# missing venv package; its prerequisites see these target-specific variables too.
test: VENV_FLAGS := --install-missing
test: export FHIRBOTS_TEST_DATABASE_URL ?= $(TEST_DATABASE_URL)
test: install install-test-services lint types deploy-check ## everything CI runs: services, lint, types, deployment checks, all tests
	$(VPY) -m pytest -q

serve: install ## the embedded engine on http://127.0.0.1:8080/fhir/R4
	$(VENV)/bin/fhirbots serve $(ARGS)

bench: $(INSTALLED) ## every benchmark (prints figures)
	for b in bench/*.py; do case $$b in */_*) ;; *) $(VPY) $$b ;; esac; done

clean: ## the virtual environment, the embedded engine's data dir, caches, fetched jars
	rm -rf $(VENV) .fhirbots .mypy_cache .ruff_cache deploy/kafka/target deploy/checks/bin src/fhirbots.egg-info
