"""core.autoload.decide: udev's `kmod load` decisions on a real fixture index."""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from pathlib import Path

import pytest

from kmodd.core.autoload.decide import (
    AUTOLOAD_FLAGS,
    MODPROBE_FLAGS,
    decide,
    kernel_module_blacklist,
    redecide,
)
from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.plan import Plan, ProbeFlag
from kmodd.core.kmod.resolve import Resolver
from kmodd.system.moddb import load_config, snapshot_indexes
from kmodd.system.sysview import FileView
from tests.daemon.daemon_tree import KVER, MACHINE_MODULES, write_tree

VIRTIO_PCI = "pci:v00001AF4d00001045sv00001AF4sd00001045bcFFscFFi00"


class States:
    """What the kernel has loaded, as the test says."""

    def __init__(self, **states: InitState) -> None:
        self.states = dict(states)

    def initstate(self, name: str) -> InitState | None:
        return self.states.get(name)


Resolvers = Callable[[], Resolver]


@pytest.fixture(scope="module")
def resolver_for(tmp_path_factory: pytest.TempPathFactory) -> Resolvers:
    root = write_tree(Path(tmp_path_factory.mktemp("autoload")) / "root", MACHINE_MODULES)
    moddir = f"/lib/modules/{KVER}"
    index, problems = snapshot_indexes(moddir, root.path(moddir))
    assert problems == []
    config = load_config(root, moddir, real_moddir=root.path(moddir))
    return lambda: Resolver(index, config, FileView(root))


def names(plan: Plan | None) -> list[str]:
    assert plan is not None
    return [s.name for s in plan.steps]


def test_a_modalias_is_planned_with_its_dependencies_first(resolver_for: Resolvers) -> None:
    resolution = decide(resolver_for(), States(), VIRTIO_PCI)
    assert (resolution.key, resolution.source, resolution.error) == \
        (VIRTIO_PCI, "modules.alias", 0)
    (candidate,) = resolution.candidates
    assert (candidate.name, candidate.outcome) == ("kmodd_virtio_pci", None)
    assert names(candidate.plan) == ["kmodd_core", "kmodd_virtio_pci"]
    assert resolution.to_load == (candidate,)


def test_the_blacklist_applies_to_names_for_udev_and_to_aliases_only_for_modprobe(
        resolver_for: Resolvers) -> None:
    def decision(key: str, flags: ProbeFlag) -> Outcome | None:
        (c,) = decide(resolver_for(), States(), key, flags).candidates
        return c.outcome

    assert decision("platform:pcspkr", AUTOLOAD_FLAGS) is Outcome.BLACKLISTED
    assert decision("platform:pcspkr", MODPROBE_FLAGS) is Outcome.BLACKLISTED
    assert decision("kmodd_pcspkr", AUTOLOAD_FLAGS) is Outcome.BLACKLISTED
    assert decision("kmodd_pcspkr", MODPROBE_FLAGS) is None


def test_built_in_live_missing_and_invalid_keys(resolver_for: Resolvers) -> None:
    (rtc,) = decide(resolver_for(), States(), "platform:rtc_cmos").candidates
    assert (rtc.name, rtc.outcome) == ("kmodd_rtc", Outcome.BUILTIN)
    live = States(kmodd_virtio_pci=InitState.LIVE)
    (pci,) = decide(resolver_for(), live, VIRTIO_PCI).candidates
    assert (pci.outcome, pci.plan) == (Outcome.ALREADY_LOADED, None)
    nothing = decide(resolver_for(), States(), "acpi:NOTHERE:")
    assert (nothing.found, nothing.source, nothing.error) == (False, None, 0)
    invalid = decide(resolver_for(), States(), "pci:v[0001")
    assert (invalid.found, invalid.error) == (False, E.EINVAL)


def test_redecide_reuses_the_plans_for_the_kernels_state_now(resolver_for: Resolvers) -> None:
    resolver = resolver_for()
    first = decide(resolver, States(), VIRTIO_PCI)
    again = redecide(resolver, States(), first)
    assert again is not None
    assert again.candidates[0].plan is first.candidates[0].plan
    loaded = redecide(resolver, States(kmodd_virtio_pci=InitState.LIVE), first)
    assert loaded is not None
    assert loaded.candidates[0].outcome is Outcome.ALREADY_LOADED
    # Live when first decided (no plan made), gone now: decide afresh.
    was_live = decide(resolver_for(), States(kmodd_virtio_pci=InitState.LIVE), VIRTIO_PCI)
    assert redecide(resolver, States(), was_live) is None


def test_the_kernels_own_deny_list_is_read_from_its_command_line() -> None:
    cmdline = "ro module_blacklist=foo-bar,baz quiet module_blacklist=q, x=module_blacklist=no"
    assert kernel_module_blacklist(cmdline) == frozenset({"foo_bar", "baz", "q"})
