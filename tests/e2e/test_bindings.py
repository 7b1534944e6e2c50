"""Device bindings are compared across boots with only the probe-order numbers blanked out.

(No QEMU: the normaliser of vm/bindings.py on devpaths of the rich set.)
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.vm.bindings import difference, normalise, pairs

AHCI = "/devices/pci0000:00/0000:00:0d.0"
XHCI = "/devices/pci0000:00/0000:00:1d.0"


@pytest.mark.parametrize(("devpath", "normalised"), [
    (f"{AHCI}/ata3/host2/target2:0:0/2:0:0:0", f"{AHCI}/ata*/host*/target*:0:0/*:0:0:0"),
    ("/devices/pci0000:00/0000:00:0f.0/virtio2/host13/target13:0:1/13:0:1:0",
     "/devices/pci0000:00/0000:00:0f.0/virtio2/host*/target*:0:1/*:0:1:0"),
    (f"{XHCI}/usb3/3-3/3-3.1/3-3.1:1.1", f"{XHCI}/usb*/*-3/*-3.1/*-3.1:1.1"),
    (f"{XHCI}/usb4/4-0:1.0", f"{XHCI}/usb*/*-0:1.0"),
    (f"{XHCI}/usb3/3-3/3-3.2/3-3.2:1.0/ttyUSB0", f"{XHCI}/usb*/*-3/*-3.2/*-3.2:1.0/ttyUSB0"),
    (f"{XHCI}/usb3/3-2/3-2:1.0/0003:0627:0001.0003",
     f"{XHCI}/usb*/*-2/*-2:1.0/0003:0627:0001.*"),
    ("/devices/pci0000:00/0000:00:17.0/hdaudioC2D0",
     "/devices/pci0000:00/0000:00:17.0/hdaudioC*D0"),
])
def test_probe_order_numbers_are_replaced_by_a_star(devpath: str, normalised: str) -> None:
    assert normalise(devpath) == normalised


@pytest.mark.parametrize("devpath", [
    "/devices/pci0000:00/0000:00:03.0/0000:01:05.0/virtio10",  # PCI addresses, virtio index
    "/devices/pci0000:00/0000:00:16.0/mmc_host/mmc0/mmc0:4567",
    "/devices/pnp0/00:06/rtc/rtc0/alarmtimer.0.auto",
    "/devices/platform/i8042/serio1",
    "/devices/LNXSYSTM:00/LNXPWRBN:00",
    "/devices/pci0000:00/0000:00:01.0/QEMU0001:00",
])
def test_names_that_do_not_depend_on_probe_order_are_kept(devpath: str) -> None:
    assert normalise(devpath) == devpath


def test_two_boots_that_numbered_the_usb_buses_differently_have_equal_pairs() -> None:
    one = [{"devpath": f"{XHCI}/usb3", "driver": "usb"}, {"devpath": f"{XHCI}/usb4",
                                                          "driver": "usb"}]
    two = [{"devpath": f"{XHCI}/usb1", "driver": "usb"}, {"devpath": f"{XHCI}/usb2",
                                                          "driver": "usb"}]
    assert pairs(one) == pairs(two) == Counter({(f"{XHCI}/usb*", "usb"): 2})


def test_a_device_without_any_driver_is_unbound_and_one_with_another_driver_is_not() -> None:
    e1000 = "/devices/pci0000:00/0000:00:04.0"
    disk = f"{AHCI}/ata3/host2/target2:0:0/2:0:0:0"
    want = pairs([{"devpath": AHCI, "driver": "ahci"}, {"devpath": disk, "driver": "sd"},
                  {"devpath": e1000, "driver": "e1000"}])
    got = pairs([{"devpath": disk.replace("host2", "host7").replace("2:0", "7:0"),
                  "driver": "sd"},
                 {"devpath": e1000, "driver": "e1000e"}])
    assert difference(want, got) == {"missing": [(e1000, "e1000"), (AHCI, "ahci")],
                                     "extra": [(e1000, "e1000e")],
                                     "unbound": [(AHCI, "ahci")]}


def test_usb_net_counts_as_driven_whichever_of_its_two_racing_drivers_claimed_it() -> None:
    port = f"{XHCI}/usb3/3-3/3-3.1"
    by_ether = [{"devpath": f"{port}/3-3.1:1.0", "driver": "cdc_ether"},
                {"devpath": f"{port}/3-3.1:1.1", "driver": "cdc_ether"}]
    by_subset = [{"devpath": f"{port}/3-3.1:1.1", "driver": "cdc_subset"}]
    assert pairs(by_ether) == pairs(by_subset) == Counter(
        {(f"{XHCI}/usb*/*-3/*-3.1", "one of: cdc_ether, cdc_subset"): 1})
    assert pairs([]) != pairs(by_subset)  # left without a driver, it still shows
