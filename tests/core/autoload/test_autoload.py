"""core.autoload.decide: udev's `kmod load` decisions on a real fixture index, and the tables that
word and rank the outcomes."""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from pathlib import Path

import pytest

from kmodd.core.autoload.decide import (
    AUTOLOAD_FLAGS,
    LOG_LEVELS,
    MESSAGES,
    MODPROBE_FLAGS,
    Decision,
    LoadOutcome,
    Request,
    decide,
    insert_outcome,
    kernel_module_blacklist,
    log_level,
    message,
    redecide,
)
from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.libkmodlog import Priority
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
    assert (candidate.name, candidate.decision) == ("kmodd_virtio_pci", Decision.LOAD)
    assert names(candidate.plan) == ["kmodd_core", "kmodd_virtio_pci"]
    assert resolution.to_load == (candidate,)


def test_the_blacklist_applies_to_names_for_udev_and_to_aliases_only_for_modprobe(
        resolver_for: Resolvers) -> None:
    def decision(key: str, flags: ProbeFlag) -> Decision:
        (c,) = decide(resolver_for(), States(), key, flags).candidates
        return c.decision

    assert decision("platform:pcspkr", AUTOLOAD_FLAGS) is Decision.BLACKLISTED
    assert decision("platform:pcspkr", MODPROBE_FLAGS) is Decision.BLACKLISTED
    assert decision("kmodd_pcspkr", AUTOLOAD_FLAGS) is Decision.BLACKLISTED
    assert decision("kmodd_pcspkr", MODPROBE_FLAGS) is Decision.LOAD


def test_built_in_live_missing_and_invalid_keys(resolver_for: Resolvers) -> None:
    (rtc,) = decide(resolver_for(), States(), "platform:rtc_cmos").candidates
    assert (rtc.name, rtc.decision, rtc.outcome) == ("kmodd_rtc", Decision.BUILTIN,
                                                     LoadOutcome.BUILTIN)
    live = States(kmodd_virtio_pci=InitState.LIVE)
    (pci,) = decide(resolver_for(), live, VIRTIO_PCI).candidates
    assert (pci.decision, pci.plan) == (Decision.ALREADY_LOADED, None)
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
    assert loaded.candidates[0].decision is Decision.ALREADY_LOADED
    # Live when first decided (no plan made), gone now: decide afresh.
    was_live = decide(resolver_for(), States(kmodd_virtio_pci=InitState.LIVE), VIRTIO_PCI)
    assert redecide(resolver, States(), was_live) is None


def test_the_kernels_own_deny_list_is_read_from_its_command_line() -> None:
    cmdline = "ro module_blacklist=foo-bar,baz quiet module_blacklist=q, x=module_blacklist=no"
    assert kernel_module_blacklist(cmdline) == frozenset({"foo_bar", "baz", "q"})


@pytest.mark.parametrize("errno,joined,denied,outcome", [
    (0, False, False, LoadOutcome.INSERTED),
    (0, True, False, LoadOutcome.ALREADY_LOADED),
    (E.EEXIST, False, False, LoadOutcome.ALREADY_LOADED),
    (E.EPERM, False, True, LoadOutcome.BLACKLISTED),
    (E.EPERM, False, False, LoadOutcome.FAILED),
    (E.ENOEXEC, False, False, LoadOutcome.FAILED),
])
def test_insert_outcomes(errno: int, joined: bool, denied: bool, outcome: LoadOutcome) -> None:
    assert insert_outcome(errno, joined=joined, kernel_denied=denied) is outcome


def test_levels_are_quiet_for_autoload_loud_for_requests_and_failures_always_warn() -> None:
    assert log_level(LoadOutcome.INSERTED, Request.AUTOLOAD) is Priority.INFO
    assert log_level(LoadOutcome.ALREADY_LOADED, Request.AUTOLOAD) is Priority.DEBUG
    assert log_level(LoadOutcome.ALREADY_LOADED, Request.EXPLICIT) is Priority.INFO
    assert log_level(LoadOutcome.NOT_FOUND, Request.AUTOLOAD) is Priority.DEBUG
    assert log_level(LoadOutcome.NOT_FOUND, Request.EXPLICIT) is Priority.ERR
    assert log_level(LoadOutcome.FAILED, Request.AUTOLOAD, Outcome.BAD_FORMAT) is \
        Priority.WARNING
    assert log_level(LoadOutcome.FAILED, Request.EXPLICIT, Outcome.BAD_FORMAT) is Priority.ERR
    assert log_level(LoadOutcome.FAILED, Request.AUTOLOAD, Outcome.NO_DEVICE) is Priority.INFO
    assert log_level(LoadOutcome.FAILED, Request.EXPLICIT, Outcome.NO_DEVICE) is Priority.NOTICE


def test_messages_are_systemds_sentences() -> None:
    assert message(LoadOutcome.INSERTED, "foo") == "Inserted module 'foo'"
    assert message(LoadOutcome.BLACKLISTED, "foo") == "Module 'foo' is deny-listed (by kmod)"
    assert message(LoadOutcome.BLACKLISTED, "foo", kernel_denied=True) == \
        "Module 'foo' is deny-listed (by kernel)"
    assert message(LoadOutcome.NOT_FOUND, "", "pci:v1") == "Failed to find module 'pci:v1'"



def test_every_outcome_has_a_sentence_and_levels() -> None:
    assert set(MESSAGES) == set(LOG_LEVELS) == set(LoadOutcome)


@pytest.mark.parametrize(("outcome", "level"), [
    (LoadOutcome.INSERTED, Priority.INFO),
    (LoadOutcome.ALREADY_LOADED, Priority.INFO),
    (LoadOutcome.BLACKLISTED, Priority.NOTICE),
    (LoadOutcome.NOT_FOUND, Priority.WARNING),
    (LoadOutcome.FAILED, Priority.WARNING),
])
def test_a_listed_module_is_told_loudly_deny_listed_at_notice_and_failures_at_warning(
        outcome: LoadOutcome, level: Priority) -> None:
    assert log_level(outcome, Request.LISTED) is level


def test_a_listed_driver_that_found_no_device_is_a_notice_not_a_warning() -> None:
    assert log_level(LoadOutcome.FAILED, Request.LISTED, Outcome.NO_DEVICE) is Priority.NOTICE
