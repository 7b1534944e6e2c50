"""The sysfs binding edge (`system.binding`): on a tree laid out as sysfs is, and on this
machine's real sysfs (reads, and a probe of a device that has its driver, which the kernel
answers without changing anything)."""

from __future__ import annotations

import os
from pathlib import Path

from kmodd.core.autoload.reprobe import BindingFacts
from kmodd.system.binding import SysfsBinding
from kmodd.system.root import Root

DEV = "/devices/pci0000:00/0000:00:1f.2"


def tree(base: Path, *, override: str = "(null)", autoprobe: str = "1",
         bound: bool = False) -> Root:
    sys = base / "sys"
    (sys / "bus/pci/drivers/ahci").mkdir(parents=True)
    (sys / "bus/pci/drivers_autoprobe").write_text(autoprobe + "\n")
    (sys / "bus/pci/drivers_probe").write_text("")
    (sys / "class/net").mkdir(parents=True)
    device = sys / DEV.lstrip("/")
    device.mkdir(parents=True)
    (device / "subsystem").symlink_to(sys / "bus/pci")
    (device / "driver_override").write_text(override + "\n")
    if bound:
        (device / "driver").symlink_to(sys / "bus/pci/drivers/ahci")
    (sys / "module/ahci/drivers/pci:ahci").mkdir(parents=True)
    (sys / "module/libahci").mkdir(parents=True)
    net = sys / "devices/virtual/net/lo"
    net.mkdir(parents=True)
    (net / "subsystem").symlink_to(sys / "class/net")
    return Root(str(base))


def test_facts_of_an_unbound_bus_device_name_its_bus_and_its_modules_drivers(
        tmp_path: Path) -> None:
    binding = SysfsBinding(tree(tmp_path))
    assert binding.facts(DEV, ["ahci", "libahci"]) == BindingFacts(
        bus="pci", driver=None, driver_override="", autoprobe=True,
        module_drivers={"ahci": ("ahci",)})


def test_facts_show_the_driver_the_override_and_autoprobe_off(tmp_path: Path) -> None:
    binding = SysfsBinding(tree(tmp_path, override="vfio-pci", autoprobe="0", bound=True))
    facts = binding.facts(DEV, ["ahci"])
    assert (facts.driver, facts.driver_override, facts.autoprobe) == ("ahci", "vfio-pci", False)


def test_a_class_device_has_no_bus(tmp_path: Path) -> None:
    facts = SysfsBinding(tree(tmp_path)).facts("/devices/virtual/net/lo", ["ahci"])
    assert (facts.bus, facts.module_drivers) == (None, {})


def test_a_probe_writes_the_device_name_to_its_bus_drivers_probe(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert SysfsBinding(root).probe("pci", DEV) == 0
    assert (tmp_path / "sys/bus/pci/drivers_probe").read_text() == "0000:00:1f.2"


def test_a_probe_on_a_bus_without_drivers_probe_returns_the_errno(tmp_path: Path) -> None:
    assert SysfsBinding(tree(tmp_path)).probe("usb", "/devices/usb1") == 2  # ENOENT


def real_bound_pci_device() -> str:
    for name in sorted(os.listdir("/sys/bus/pci/devices")):
        path = os.path.realpath(os.path.join("/sys/bus/pci/devices", name))
        if os.path.islink(os.path.join(path, "driver")):
            return path.removeprefix("/sys")
    raise AssertionError("this machine has no PCI device with a driver")


def test_real_sysfs_facts_of_a_bound_pci_device_match_its_driver_link() -> None:
    devpath = real_bound_pci_device()
    driver = os.path.basename(os.readlink(f"/sys{devpath}/driver"))
    facts = SysfsBinding(Root()).facts(devpath, [])
    assert (facts.bus, facts.driver, facts.driver_override) == ("pci", driver, "")


def test_the_real_kernel_accepts_a_probe_of_a_bound_device_and_leaves_it_bound() -> None:
    devpath = real_bound_pci_device()
    binding = SysfsBinding(Root())
    before = binding.driver(devpath)
    assert binding.probe("pci", devpath) == 0
    assert binding.driver(devpath) == before
