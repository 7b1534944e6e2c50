# kmodd: the two entry points a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3

.PHONY: setup test lint demo

setup:
	./scripts/setup-test-env

test: setup
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check kmodd tests bench packaging/build-deb
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy --strict packaging/build-deb

# Boots the real Debian kernel under QEMU: kmodd coldplugs, a NIC and a USB keyboard are
# hotplugged; prints kmodctl status/blame and kmodd's journal (tests/e2e/vm/demo.py).
demo: setup
	$(PYTHON) tests/e2e/vm demo $(DEMO_ARGS)
