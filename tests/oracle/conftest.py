"""Session fixtures for the differential tests: the tree, the fake roots, the suites, the oracle.

The oracle's results for a suite are computed once per session (and cached on disk across
sessions, see `cache.py`) by running the real kmod in a masked namespace (`kmodrun.py`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import pytest

from . import cache
from .corpus import Entry, build_corpus
from .kmodrun import KmodRunner, Result
from .suites import (
    Suite,
    Tree,
    corpus_suites,
    elf_queries,
    flags,
    make_blacklist_root,
    make_empty_root,
    module_variants,
    quirk_lookups,
    show_config,
    show_depends_all,
)


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the kmod oracle needs root (unshare -m, bind mounts)")


@pytest.fixture(scope="session")
def oracle_tree() -> Tree:
    """The real Debian kernel tree, depmod'ed by the real kmod (tests/kerneltree.py)."""
    _needs_root()
    from tests import kerneltree

    t = kerneltree.debian_kernel_tree()
    return Tree(t.root, t.kver)


@pytest.fixture(scope="session")
def empty_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_empty_root(str(tmp_path_factory.mktemp("empty-root")))


@pytest.fixture(scope="session")
def blacklist_root(tmp_path_factory: pytest.TempPathFactory, oracle_tree: Tree) -> str:
    return make_blacklist_root(str(tmp_path_factory.mktemp("blacklist-root")), oracle_tree)


@pytest.fixture(scope="session")
def corpus(oracle_tree: Tree) -> list[Entry]:
    return build_corpus(oracle_tree.moddir)


@pytest.fixture(scope="session")
def suites(oracle_tree: Tree, empty_root: str, blacklist_root: str,
           corpus: list[Entry]) -> dict[str, Suite]:
    """Every differential suite by name."""
    all_suites = [
        show_depends_all(oracle_tree, empty_root),
        module_variants(oracle_tree, empty_root),
        *corpus_suites(oracle_tree, empty_root, blacklist_root, corpus),
        elf_queries(oracle_tree, empty_root),
        *show_config(oracle_tree, empty_root),
        quirk_lookups(oracle_tree),
        *flags(oracle_tree, empty_root),
    ]
    return {s.name: s for s in all_suites}


@pytest.fixture(scope="session")
def kmod_runner() -> Iterator[Callable[[], KmodRunner]]:
    """`kmod_runner()`: one namespace for the session, started on first use."""
    _needs_root()
    with tempfile.TemporaryDirectory() as nowhere:
        runner = KmodRunner(nowhere)
        started = False

        def get() -> KmodRunner:
            nonlocal started
            if not started:
                runner.start()
                started = True
            return runner

        yield get
        if started:
            runner.close()


@pytest.fixture(scope="session")
def oracle(kmod_runner: Callable[[], KmodRunner]) -> Callable[[Suite], list[Result]]:
    """`oracle(suite)`: the real kmod's results for a suite (once per session, disk-cached)."""
    memo: dict[str, list[Result]] = {}

    def compute(suite: Suite) -> list[Result]:
        runner = kmod_runner()
        runner.use_root(suite.root)
        return runner.run(suite.cases)

    def get(suite: Suite) -> list[Result]:
        if suite.name not in memo:
            memo[suite.name] = cache.cached_results(suite, compute)
        return memo[suite.name]

    return get


@pytest.fixture(scope="session")
def kmodd_front_end() -> None:
    """kmodd's modprobe front end must import: until it exists, tests using this fixture error
    at set-up (without stopping the collection of other tests)."""
    import kmodd.cli.modprobe  # noqa: F401
