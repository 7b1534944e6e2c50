# kmodd: the two entry points a newcomer needs are `make demo` and `make test`.
# Every target runs in the virtual environment `make setup` makes from Debian's
# /usr/bin/python3 (scripts/setup-test-env); its bin/ comes first on PATH, so that `python3`,
# `kmodctl` and `kmodd` found there are the same interpreter and the checkout's commands.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PYTEST_ARGS ?=
export VENV
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup test lint demo man deb

setup:
	./scripts/setup-test-env

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# mypy checks kmodd/, tests/ and bench/ (pyproject.toml), then the guest's scripts, which import
# each other by their bare names as they do in the guest's /vm.
lint: setup
	$(PYTHON) -m ruff check kmodd tests bench
	$(PYTHON) -m mypy
	MYPYPATH=tests/e2e/vm/guest $(PYTHON) -m mypy $(sort $(wildcard tests/e2e/vm/guest/*.py))

# Boots the real Debian kernel under QEMU: kmodd coldplugs, a NIC and a USB keyboard are
# hotplugged; prints kmodctl status/blame and kmodd's journal (tests/e2e/vm/demo.py).
demo: setup
	$(PYTHON) tests/e2e/vm demo $(DEMO_ARGS)

# The manual pages and the bash completion, generated from the code's tables (tests check
# that the committed files are up to date).
man:
	$(PYTHON) -m kmodd.cli.manpages --write man/
	$(PYTHON) -m kmodd.cli.completion --write completion/

# The Debian package (debian/, dpkg-buildpackage, on a copy of the checkout): dist/*.deb.
deb: setup
	packaging/build-deb
