"""Scenario tests: kmod testsuite behaviours ported as fake roots with committed goldens.

The helpers import the oracle package as `oracle` (a sibling under tests/), so tests/ must be
on sys.path however this package was reached (pytest, or `python -m tests.scenarios.record`).
"""

import os
import sys

_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
