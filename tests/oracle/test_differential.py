"""kmodd's modprobe gives the same bytes and exit code as the real kmod 30, case for case.

Each test takes one suite (tests/oracle/suites.py), gets the real kmod's results from the
session's oracle, runs every case through `kmodd.cli.modprobe.run` in-process, and fails with
the number of differing cases and a short diff of the first few. The last tests run a sample
of a few hundred cases through the installed `kmodctl modprobe` command and a `modprobe`
symlink to it.

Until kmodd's front end exists every test here errors at set-up (the `kmodd_front_end`
fixture cannot import `kmodd.cli.modprobe`): that is expected, and it does not stop the
collection of other tests.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import pytest

from .compare import report
from .kmodd_side import kmodctl_path, run_inprocess_many, run_many_commands
from .kmodrun import Result
from .suites import Suite

pytestmark = [pytest.mark.oracle, pytest.mark.usefixtures("kmodd_front_end")]

Oracle = Callable[[Suite], list[Result]]
#: About this many cases go through the installed command (spread over every suite).
COMMAND_SAMPLE = 250
SYMLINK_SAMPLE = 20


def _check(suite: Suite, oracle: Oracle) -> None:
    expected = oracle(suite)
    actual = run_inprocess_many(suite.cases, suite.root)
    problem = report(suite.name, suite.cases, expected, actual)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_show_depends_of_every_module_matches_kmod(suites: dict[str, Suite],
                                                  oracle: Oracle) -> None:
    _check(suites["show-depends-all"], oracle)


def test_blacklist_ignore_install_resolve_and_arguments_on_sampled_modules_match_kmod(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check(suites["module-variants"], oracle)


def test_resolving_every_corpus_string_matches_kmod(suites: dict[str, Suite],
                                                    oracle: Oracle) -> None:
    _check(suites["corpus-resolve"], oracle)


def test_show_depends_of_every_corpus_string_matches_kmod(suites: dict[str, Suite],
                                                          oracle: Oracle) -> None:
    _check(suites["corpus-show-depends"], oracle)


def test_corpus_strings_against_a_blacklist_with_and_without_dash_b_match_kmod(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check(suites["corpus-blacklist"], oracle)


def test_show_exports_and_modversions_match_kmod(suites: dict[str, Suite],
                                                 oracle: Oracle) -> None:
    _check(suites["elf-queries"], oracle)


def test_show_config_of_the_bare_tree_matches_kmod(suites: dict[str, Suite],
                                                   oracle: Oracle) -> None:
    _check(suites["config-bare"], oracle)


def test_show_config_with_the_quirks_tree_and_dash_c_paths_matches_kmod(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check(suites["config-quirks"], oracle)


def test_lookups_through_every_quirk_of_the_quirks_tree_match_kmod(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check(suites["quirk-lookups"], oracle)


def test_flags_states_dry_run_removal_and_errors_with_the_quirks_tree_match_kmod(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check(suites["flags-quirks"], oracle)


def test_flags_and_errors_without_any_configuration_match_kmod(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check(suites["flags-bare"], oracle)


def _command_sample(suites: dict[str, Suite], size: int) -> list[tuple[str, int]]:
    """About `size` (suite name, case index) pairs, spread evenly over every suite."""
    total = sum(len(s.cases) for s in suites.values())
    stride = max(1, total // size)
    picked = []
    for name, suite in suites.items():
        step = min(stride, max(1, len(suite.cases) // 3))
        picked += [(name, i) for i in range(0, len(suite.cases), step)]
    return picked


def _check_commands(suites: dict[str, Suite], oracle: Oracle, size: int,
                    link: str | None) -> None:
    sample = _command_sample(suites, size)
    cases = [suites[name].cases[i] for name, i in sample]
    expected = [oracle(suites[name])[i] for name, i in sample]
    actual = run_many_commands([(suites[name].cases[i], suites[name].root)
                                for name, i in sample], link=link)
    problem = report("installed command" + (" via a modprobe symlink" if link else ""),
                     cases, expected, actual)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_installed_kmodctl_modprobe_matches_kmod_on_a_sample_of_every_suite(
        suites: dict[str, Suite], oracle: Oracle) -> None:
    _check_commands(suites, oracle, COMMAND_SAMPLE, None)


def test_a_symlink_named_modprobe_to_kmodctl_matches_kmod_on_a_sample(
        suites: dict[str, Suite], oracle: Oracle, tmp_path: pathlib.Path) -> None:
    link = str(tmp_path / "modprobe")
    os.symlink(kmodctl_path(), link)
    _check_commands(suites, oracle, SYMLINK_SAMPLE, link)
