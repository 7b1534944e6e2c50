"""Every scenario's committed goldens equal the live kmod, and kmodd produces them too.

The first test keeps the goldens honest (a golden that no longer matches the real kmod 30 on
this machine fails), the second is the behaviour kmodd must have. Scenarios that need a real
module load (modules_loaded, install command loops, force flags, old kernels) are not here:
they come with the simulated kernel.

The real kmod reads /etc/modprobe.d, /proc/cmdline and /sys/module whatever its options say, so
the first test shows it the fake root in a mount namespace and needs root. kmodd is given the
fake root (`root=`), so the second runs as any user, except for the scenarios whose depmod.d
only a depmod in a namespace can read (`Scenario.depmod_needs_namespace`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from tests.oracle.compare import describe
from tests.oracle.kmodd_side import run_inprocess
from tests.oracle.kmodrun import KmodRunner
from tests.toolrun import can_mask_host, needs_mount_namespace

from .build import Scenario, build_root, load, names

pytestmark = pytest.mark.oracle


def _kmodd_params() -> list[object]:
    """Every scenario name; those whose root needs the namespace's depmod are marked so."""
    return [pytest.param(name, marks=needs_mount_namespace)
            if load(name).depmod_needs_namespace else name for name in names()]


@pytest.fixture(scope="module")
def runner() -> Iterator[KmodRunner]:
    """One namespace for every scenario (it switches fake roots between them)."""
    with tempfile.TemporaryDirectory() as nowhere, KmodRunner(nowhere) as kmod:
        yield kmod


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> dict[str, tuple[Scenario, str]]:
    """Every scenario with its fake root, built once for this module; a root that needs the
    namespace's depmod only where the namespace may be started (its tests are skipped
    elsewhere)."""
    base = tmp_path_factory.mktemp("scenarios")
    out = {}
    for name in names():
        scenario = load(name)
        runner: KmodRunner | None = None
        if scenario.depmod_needs_namespace:
            if not can_mask_host():
                continue
            runner = request.getfixturevalue("runner")
        out[name] = (scenario, build_root(scenario, str(base / name), runner))
    return out


@needs_mount_namespace
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
@pytest.mark.parametrize("name", _kmodd_params())
def test_kmodd_prints_what_kmod_printed(built: dict[str, tuple[Scenario, str]],
                                        name: str) -> None:
    scenario, root = built[name]
    expected = scenario.expected(root)
    assert expected is not None
    case = scenario.case(root)
    actual = scenario.mask(run_inprocess(case, root))
    if actual != expected:
        pytest.fail(describe(case, expected, actual), pytrace=False)
