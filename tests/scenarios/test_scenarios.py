"""Every scenario's committed goldens equal the live kmod, and kmodd produces them too.

The first test keeps the goldens honest (a golden that no longer matches the real kmod 30 on
this machine fails), the second is the behaviour kmodd must have. Scenarios that need a real
module load (modules_loaded, install command loops, force flags, old kernels) are not here:
they come with the simulated kernel.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from oracle.compare import describe
from oracle.kmodd_side import run_inprocess
from oracle.kmodrun import KmodRunner

from .build import Scenario, build_root, load, names

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def runner() -> Iterator[KmodRunner]:
    """One namespace for every scenario (it switches fake roots between them)."""
    if os.geteuid() != 0:
        pytest.skip("the kmod oracle needs root (unshare -m, bind mounts)")
    with tempfile.TemporaryDirectory() as nowhere, KmodRunner(nowhere) as kmod:
        yield kmod


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory,
          runner: KmodRunner) -> dict[str, tuple[Scenario, str]]:
    """Every scenario with its fake root, built once for this module."""
    base = tmp_path_factory.mktemp("scenarios")
    out = {}
    for name in names():
        scenario = load(name)
        out[name] = (scenario, build_root(scenario, str(base / name), runner))
    return out


@pytest.mark.parametrize("name", names())
def test_golden_output_is_what_kmod_prints(built: dict[str, tuple[Scenario, str]],
                                           runner: KmodRunner, name: str) -> None:
    scenario, root = built[name]
    expected = scenario.expected(root)
    assert expected is not None, f"{name}: no goldens (python -m tests.scenarios.record {name})"
    case = scenario.case(root)
    runner.use_root(root)
    (actual,) = runner.run([case])
    actual = scenario.mask(actual)
    if actual != expected:
        pytest.fail("golden is stale (re-record and review):\n" +
                    describe(case, expected, actual), pytrace=False)


@pytest.mark.usefixtures("kmodd_front_end")
@pytest.mark.parametrize("name", names())
def test_kmodd_prints_what_kmod_printed(built: dict[str, tuple[Scenario, str]],
                                        name: str) -> None:
    scenario, root = built[name]
    expected = scenario.expected(root)
    assert expected is not None
    case = scenario.case(root)
    actual = scenario.mask(run_inprocess(case, root))
    if actual != expected:
        pytest.fail(describe(case, expected, actual), pytrace=False)
