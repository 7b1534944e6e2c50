"""Hotplug through QMP under each loader: modules go live, drivers bind, removal is seen.

The same VM (usbhost set) also carries the policy cases: a blacklisted module is not loaded
for its device, a module with bad options fails to load and its device stays unbound; under
kmodd, `kmodctl why` names the blacklist's file and line, the journal and `kmodctl explain`
give the failure's cause with the kernel's own line, and `kmodctl load`/`unload` work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.e2e_support import loader_or_skip, skip_kmodd_without_unit
from tests.e2e.vm import anchor, devices, image
from tests.e2e.vm.machine import VM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLICY = """\
# written by tests/e2e/test_hotplug.py before the loader starts
blacklist e1000e
options i6300esb heartbeat=notanumber
"""
BLACKLISTED = next(d for d in anchor.EXTRA_HOTPLUG_DEVICES if d.label == "e1000e")
BAD_OPTIONS = next(d for d in anchor.EXTRA_HOTPLUG_DEVICES if d.label == "i6300esb")
QUIET = 3.0


@pytest.fixture(scope="module", params=["udev", "kmodd"])
def vm(request: pytest.FixtureRequest, guest: image.Guest) -> Iterator[VM]:
    if request.param == "kmodd":
        skip_kmodd_without_unit(guest)
    with VM(devices=devices.usbhost(), guest=guest, name=f"test-hotplug-{request.param}") as v:
        loader = loader_or_skip(v, request.param)
        v.put("/etc/modprobe.d/e2e-policy.conf", POLICY)
        v.start_journald()  # kmodd logs there, as under systemd
        loader.start(v)
        v.uevents_start(stream=True)
        yield v


@pytest.mark.parametrize("dev", anchor.HOTPLUG_DEVICES, ids=lambda d: d.label)
def test_hotplugged_device_gets_its_modules_live_and_drivers_bound(
        vm: VM, dev: anchor.HotplugDevice) -> None:
    r = anchor.hotplug(vm, dev)
    print(f"{dev.label}: modules live {r['modules_live']}, bound {r['bound']}, "
          f"unplugged in {r['unplug']['gone_seconds']} s")
    assert (r["missing_modules"], r["missing_bindings"]) == ([], [])
    assert r["unplug"]["gone_seconds"] is not None
    removed = [e["devpath"] for e in r["unplug"]["uevents_remove"] if e["action"] == "remove"]
    if dev.pci_addr is not None:
        assert f"/devices/pci0000:00/0000:00:{int(dev.pci_addr, 16):02x}.0" in removed
    else:
        assert removed, "no remove uevent after device_del"


def _plug_and_settle(vm: VM, dev: anchor.HotplugDevice) -> set[str]:
    """device_add, wait until uevents stop for QUIET s; the modules loaded then."""
    t0 = time.monotonic()
    vm.qmp("device_add", **dev.qmp)
    while True:
        evs = vm.uevents(t0)
        if time.monotonic() - (evs[-1][0] if evs else t0) >= QUIET:
            return vm.loaded_modules()
        time.sleep(0.1)


def _bound_driver(vm: VM, dev: anchor.HotplugDevice) -> str:
    assert dev.pci_addr is not None
    path = f"/sys/bus/pci/devices/0000:00:{int(dev.pci_addr, 16):02x}.0/driver"
    return vm.sh(f"basename $(readlink {path}) 2>/dev/null || true").out.strip()


def _loader(request: pytest.FixtureRequest) -> str:
    """Which loader the `vm` of this test runs ("udev" or "kmodd")."""
    name: str = request.node.callspec.params["vm"]
    return name


def _devpath(dev: anchor.HotplugDevice) -> str:
    assert dev.pci_addr is not None
    return f"/devices/pci0000:00/0000:00:{int(dev.pci_addr, 16):02x}.0"


def test_blacklisted_module_is_not_loaded_for_a_hotplugged_device(
        vm: VM, request: pytest.FixtureRequest) -> None:
    loaded = _plug_and_settle(vm, BLACKLISTED)
    try:
        assert "e1000e" not in loaded
        assert _bound_driver(vm, BLACKLISTED) == ""
        if _loader(request) == "kmodd":
            why = vm.sh(f"kmodctl why {_devpath(BLACKLISTED)}").out
            assert "e1000e (modules.alias): blacklisted: blacklisted by " \
                   "/etc/modprobe.d/e2e-policy.conf:2;" in why
    finally:
        anchor.unplug(vm, BLACKLISTED)


def test_module_with_bad_options_fails_to_load_and_its_device_stays_unbound(
        vm: VM, request: pytest.FixtureRequest) -> None:
    loaded = _plug_and_settle(vm, BAD_OPTIONS)
    try:
        assert "i6300esb" not in loaded
        assert _bound_driver(vm, BAD_OPTIONS) == ""
        kernel_line = "i6300esb: `notanumber' invalid for parameter `heartbeat'"
        assert kernel_line in vm.sh("dmesg").out
        if _loader(request) == "kmodd":
            journal = vm.sh("journalctl --no-pager -o cat _COMM=kmodd").out.splitlines()
            failed = [line for line in journal
                      if line.startswith("Failed to insert module 'i6300esb': Invalid argument")]
            assert len(failed) == 1 and f"kernel: {kernel_line}" in failed[0], journal[-10:]
            explained = vm.sh("kmodctl explain i6300esb", check=False)
            assert explained.rc == 1  # problems found
            text = explained.out
            assert "[problem] attempt: the load failed with EINVAL" in text
            assert f"kernel log: {kernel_line}" in text
            assert "options: heartbeat=notanumber" in text
    finally:
        anchor.unplug(vm, BAD_OPTIONS)


@pytest.mark.parametrize("vm", ["kmodd"], indirect=True)  # kmodctl asks the running kmodd
def test_kmodctl_load_and_unload_work_on_the_real_kernel(vm: VM) -> None:
    assert "dummy" not in vm.loaded_modules()
    loaded = vm.sh("kmodctl load dummy").out
    assert loaded.startswith("dummy: inserted: "), loaded
    assert vm.sh("cat /sys/module/dummy/initstate").out == "live\n"
    removed = vm.sh("kmodctl unload dummy").out
    assert removed.startswith("dummy: removed: "), removed
    assert "dummy" not in vm.loaded_modules()
