"""Scenario tests: kmod testsuite behaviours ported as fake roots with committed goldens."""
