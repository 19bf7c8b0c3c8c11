# fhirbots — one entry point for every chore. `make serve` and `make test` are all a newcomer needs.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
export FHIRBOTS_TEST_DATABASE_URL ?= postgresql://fhirbots:fhirbots@127.0.0.1:5432/fhirbots_test

.PHONY: install install-test-services lint format types unit test serve bench clean

install: ## Python package and dev tools (editable)
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'

install-test-services: ## PostgreSQL (Debian package, started) and the Kafka jars (Maven)
	bash deploy/postgres/setup.sh
	bash deploy/kafka/broker.sh fetch

lint: ## ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: ## apply ruff formatting and fixes
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

types: ## mypy strict
	$(PYTHON) -m mypy

unit: ## tests without services
	$(PYTHON) -m pytest -m "not integration" -q

test: install install-test-services lint types ## everything CI runs: services, lint, types, all tests
	$(PYTHON) -m pytest -q

serve: install ## the embedded engine on http://127.0.0.1:8080/fhir/R4
	fhirbots serve

bench: ## every benchmark (prints figures)
	for b in bench/*.py; do case $$b in */_*) ;; *) $(PYTHON) $$b ;; esac; done

clean:
	rm -rf .fhirbots .mypy_cache .ruff_cache deploy/kafka/target
