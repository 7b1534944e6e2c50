"""Coldplug on the rich device set: udev's module set (the anchor), and kmodd held to it."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e.e2e_support import loader_or_skip, skip_kmodd_without_unit
from tests.e2e.vm import anchor, devices, image, loaders
from tests.e2e.vm.machine import VM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECORDED = os.path.join(anchor.DATA_DIR, "coldplug-udev-rich-max.json")
KILL_AFTER_MODULES = 30  # SIGKILL kmodd once this many modules went live


@pytest.fixture(scope="module")
def udev_report(guest: image.Guest) -> dict[str, Any]:
    with VM(devices=devices.rich(), guest=guest, name="test-coldplug-udev") as vm:
        return anchor.coldplug(vm, loader_or_skip(vm, "udev"))


def test_udev_coldplug_starts_from_zero_loaded_modules(udev_report: dict[str, Any]) -> None:
    assert udev_report["modules_before"] == []


def test_udev_coldplug_loads_the_recorded_module_set(udev_report: dict[str, Any]) -> None:
    with open(RECORDED) as f:
        recorded = json.load(f)
    print(f"udev loaded {len(udev_report['modules'])} modules: {' '.join(udev_report['modules'])}")
    # The kernel is pinned (tests/kerneltree.py): a mismatch is a pin moved without the
    # recording, and must fail rather than let this check stop running.
    assert recorded["kernel"] == udev_report["kernel"], (
        f"recorded for {recorded['kernel']}, the guest runs {udev_report['kernel']}: re-record "
        "with `python3 bench/e2e_loaders.py coldplug --record`")
    got = set(udev_report["modules"])
    want = set(recorded["modules"])
    assert (sorted(got - want), sorted(want - got)) == ([], [])


def test_udev_coldplug_binds_each_nic_to_its_module(udev_report: dict[str, Any]) -> None:
    bound = {(b["driver"], b["module"]) for b in udev_report["bindings"]}
    for pair in [("e1000", "e1000"), ("e1000e", "e1000e"), ("virtio_net", "virtio_net"),
                 ("8139cp", "8139cp"), ("vmxnet3", "vmxnet3"), ("pcnet32", "pcnet32")]:
        assert pair in bound


def test_kmodd_coldplug_loads_exactly_the_udev_set(guest: image.Guest,
                                                   udev_report: dict[str, Any]) -> None:
    skip_kmodd_without_unit(guest)
    with VM(devices=devices.rich(), guest=guest, name="test-coldplug-kmodd") as vm:
        report = anchor.coldplug(vm, loader_or_skip(vm, "kmodd"))
    assert report["modules_before"] == []
    got, want = set(report["modules"]), set(udev_report["modules"])
    assert (sorted(got - want), sorted(want - got)) == ([], [])


def test_kmodd_killed_mid_coldplug_and_restarted_ends_with_the_udev_set_without_duplicates(
        guest: image.Guest, udev_report: dict[str, Any]) -> None:
    skip_kmodd_without_unit(guest)
    with VM(devices=devices.rich(), guest=guest, name="test-coldplug-kill") as vm:
        kmodd = loader_or_skip(vm, "kmodd")
        assert isinstance(kmodd, loaders.Kmodd)
        cmd = kmodd.command(vm)
        vm.call("insert_trace_start")
        since = vm.uevents_start(stream=True)
        first = vm.spawn(list(cmd.argv), env=cmd.env, notify=cmd.notify, name="kmodd-1")
        deadline = time.monotonic() + 600
        while len([1 for _, ev in vm.uevents(since) if ev["action"] == "add"
                   and ev["devpath"].startswith("/module/")]) < KILL_AFTER_MODULES:
            assert time.monotonic() < deadline, "kmodd loaded too few modules to be killed"
            time.sleep(0.05)
        vm.call("signal", pid=first["pid"], sig=int(signal.SIGKILL))
        assert vm.call("wait", pid=first["pid"], timeout=30)["rc"] == -signal.SIGKILL
        killed_with = vm.loaded_modules()
        kmodd.start(vm)  # the restart, as systemd's Restart= would do it
        final = vm.loaded_modules()
        inserts = vm.call("insert_trace_report")
    want = set(udev_report["modules"])
    assert len(killed_with) < len(want)
    assert {"extra": sorted(final - want), "missing": sorted(want - final),
            "duplicate inserts": inserts["duplicates"]} == \
        {"extra": [], "missing": [], "duplicate inserts": 0}, inserts
