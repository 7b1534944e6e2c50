"""system.sysfs: the coldplug scan of real and fake sysfs trees, and device details."""

from __future__ import annotations

import os
from pathlib import Path

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.system.root import Root
from kmodd.system.sysfs import (
    COLDPLUG_SEQNUM,
    DeviceDetails,
    ScanProblem,
    SysfsDevice,
    device_details,
    loaded_modules,
    module_is_present,
    scan_devices,
)


def _expected_on_host() -> dict[str, str]:
    """Every device under /sys/devices with a modalias, found independently with os.walk."""
    found = {}
    for directory, _dirs, files in os.walk("/sys/devices"):
        if "uevent" not in files:
            continue
        with open(os.path.join(directory, "uevent")) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        modalias = env.get("MODALIAS", "")
        if not modalias and "modalias" in files:
            with open(os.path.join(directory, "modalias")) as f:
                modalias = f.read().rstrip("\n")
        if modalias:
            found[directory.removeprefix("/sys")] = modalias
    return found


def test_the_scan_finds_every_device_with_a_modalias_on_this_machine() -> None:
    scan = scan_devices(Root())
    assert {d.devpath: d.modalias for d in scan.devices} == _expected_on_host()
    assert scan.problems == ()
    for device in scan.devices:
        link = f"/sys{device.devpath}/subsystem"
        expected = os.path.basename(os.readlink(link)) if os.path.islink(link) else ""
        assert device.subsystem == expected


def _tree(tmp_path: Path) -> Root:
    sys = tmp_path / "sys"
    (sys / "bus" / "pci").mkdir(parents=True)
    (sys / "bus" / "virtio").mkdir(parents=True)
    (sys / "module" / "sg").mkdir(parents=True)
    (sys / "module" / "ext4").mkdir(parents=True)
    pci = sys / "devices" / "pci0000:00" / "0000:00:03.0"
    virtio = pci / "virtio2"
    virtio.mkdir(parents=True)
    (sys / "devices" / "pci0000:00" / "uevent").write_text("")
    (pci / "uevent").write_text(
        "DRIVER=virtio-pci\nPCI_ID=1AF4:1041\nMODALIAS=pci:v00001AF4d00001041\n"
    )
    (pci / "modalias").write_text("pci:v00001AF4d00001041\n")
    (pci / "vendor").write_text("0x1af4\n")
    (pci / "device").write_text("0x1041\n")
    (pci / "subsystem").symlink_to("../../../bus/pci")
    (virtio / "uevent").write_text("MODALIAS=virtio:d00000001v00001AF4\n")
    (virtio / "subsystem").symlink_to("../../../../bus/virtio")
    # A symlink back up the tree must not make the scan loop or see devices twice.
    (virtio / "loop").symlink_to("../../..")
    cpu = sys / "devices" / "system" / "cpu"
    (cpu / "cpu0").mkdir(parents=True)
    (cpu / "uevent").write_text("")
    (cpu / "modalias").write_text("cpu:type:x86,ven0002:feature:,0001\n")
    (cpu / "cpu0" / "uevent").write_text("MODALIAS=cpu:type:x86,ven0002:feature:,0001\n")
    gone = sys / "devices" / "gone"
    gone.mkdir()
    (gone / "uevent").symlink_to("/nonexistent/uevent")
    plain = sys / "devices" / "virtual" / "mem"
    plain.mkdir(parents=True)
    (plain / "uevent").write_text("MAJOR=1\nMINOR=1\n")
    return Root(str(tmp_path))


def test_the_scan_of_a_fake_tree_reads_uevent_files_and_falls_back_to_modalias(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path)
    scan = scan_devices(root)
    assert [(d.devpath, d.subsystem, dict(d.env)) for d in scan.devices] == [
        ("/devices/pci0000:00/0000:00:03.0", "pci",
         {"DRIVER": "virtio-pci", "PCI_ID": "1AF4:1041", "MODALIAS": "pci:v00001AF4d00001041"}),
        ("/devices/pci0000:00/0000:00:03.0/virtio2", "virtio",
         {"MODALIAS": "virtio:d00000001v00001AF4"}),
        ("/devices/system/cpu", "", {"MODALIAS": "cpu:type:x86,ven0002:feature:,0001"}),
        ("/devices/system/cpu/cpu0", "", {"MODALIAS": "cpu:type:x86,ven0002:feature:,0001"}),
    ]
    assert scan.problems == (
        ScanProblem(str(tmp_path / "sys" / "devices" / "gone"), "No such file or directory"),
    )


def test_a_scanned_device_becomes_the_add_uevent_the_kernel_would_send() -> None:
    device = SysfsDevice("/devices/platform/pcspkr", "platform",
                         {"MODALIAS": "platform:pcspkr", "DRIVER": "pcspkr"})
    assert device.as_uevent() == Uevent(
        Action.ADD, "/devices/platform/pcspkr", "platform", COLDPLUG_SEQNUM,
        {"ACTION": "add", "DEVPATH": "/devices/platform/pcspkr", "SUBSYSTEM": "platform",
         "MODALIAS": "platform:pcspkr", "DRIVER": "pcspkr", "SEQNUM": "0"},
    )


def test_loaded_modules_and_the_udev_module_test(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert loaded_modules(root) == ("ext4", "sg")
    assert module_is_present(root, "sg") is True
    assert module_is_present(root, "ppdev") is False
    assert loaded_modules(Root(str(tmp_path / "nowhere"))) == ()


def test_device_details_from_a_fake_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert device_details(root, "/devices/pci0000:00/0000:00:03.0") == DeviceDetails(
        devpath="/devices/pci0000:00/0000:00:03.0", subsystem="pci", devtype=None, driver=None,
        modalias="pci:v00001AF4d00001041", vendor="0x1af4", model="0x1041",
    )
    assert device_details(root, "/devices/nothing") is None


def test_details_agree_with_pyudev_for_every_device_here() -> None:
    """pyudev (libudev) is the reference: kmodd reads the same sysfs and udev database."""
    import pyudev

    context = pyudev.Context()
    for device in scan_devices(Root()).devices:
        mine = device_details(Root(), device.devpath)
        assert mine is not None
        theirs = pyudev.Devices.from_path(context, device.devpath)
        assert (mine.subsystem, mine.devtype, mine.driver, mine.modalias) == (
            theirs.subsystem, theirs.device_type, theirs.driver, device.modalias)
        props = dict(theirs.properties)
        if "ID_VENDOR_FROM_DATABASE" in props:
            assert mine.vendor == props["ID_VENDOR_FROM_DATABASE"]
    assert device_details(Root(), "/devices/does-not-exist") is None


def test_vendor_and_model_come_from_udevs_database_where_udevd_recorded_them(
        tmp_path: Path) -> None:
    root = _tree(tmp_path)
    data = tmp_path / "run/udev/data"
    data.mkdir(parents=True)
    (data / "+pci:0000:00:03.0").write_text(
        "I:12345\nE:ID_VENDOR_FROM_DATABASE=Red Hat, Inc.\n"
        "E:ID_MODEL_FROM_DATABASE=Virtio 1.0 network device\nG:systemd\nbroken line\n")
    details = device_details(root, "/devices/pci0000:00/0000:00:03.0")
    assert details is not None
    assert (details.vendor, details.model) == ("Red Hat, Inc.", "Virtio 1.0 network device")


def test_udevs_database_names_a_device_as_libudev_does() -> None:
    from kmodd.core.autoload.uevent import udev_database_id

    assert udev_database_id("block", "sda", {"MAJOR": "8", "MINOR": "0"}) == "b8:0"
    assert udev_database_id("tty", "ttyS0", {"MAJOR": "4", "MINOR": "64"}) == "c4:64"
    assert udev_database_id("net", "eth0", {"IFINDEX": "2"}) == "n2"
    assert udev_database_id("pci", "0000:00:03.0", {}) == "+pci:0000:00:03.0"
