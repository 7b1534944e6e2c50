# kmodd: the two entry points a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3

.PHONY: setup test lint

setup:
	./scripts/setup-test-env

test: setup
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check kmodd tests
	$(PYTHON) -m mypy
