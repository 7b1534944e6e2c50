"""Which driver each device is bound to, in words that stay the same from boot to boot.

The listing comes from the guest (`guest/coldplug.py: bindings()`: every directory under
/sys/devices with a `driver` link). Some names in a devpath are numbers the kernel hands out
in the order drivers register, so they move between two boots of the same image when modules
load in another order. `normalise` puts `*` in place of exactly those numbers that were seen
to move between boots of the rich set (three uninterrupted ones: udev's recorded boot in
tests/data/qemu/, one more udev boot and one kmodd boot; and kmodd's kill boots of
bench/crash_kill.py, 2026-12-07), and nothing else:

* SCSI host, and the target and device names that start with it
  (`host13/target13:0:1/13:0:1:0`, channel, id and lun kept): the order HBA drivers
  register their hosts (sym53c8xx's disk was on host8 in one boot, host3 in another);
* USB bus, and the device and interface names that start with it (`usb3/3-3/3-3.1:1.1`,
  ports kept): the order host controller drivers register their buses (UHCI's bus was
  usb1 in one boot, usb2 in another);
* HDA codec's card number (`hdaudioC2D0`): the order sound drivers register their cards;
* HID device number (`0003:0627:0001.0002`, its last part): the order HID devices are
  added. The same in those three boots, but not in a boot where kmodd was killed early
  and restarted (bench/crash_kill.py): the four USB HID devices were numbered in another
  order (the xHCI keyboard .0002 in one, .0001 in the other);
* ATA port (`ata3`): each port a libata driver registers takes the next number, so the
  numbers depend on which controller registered first, and how often. The same in the
  three uninterrupted boots; in a boot where kmodd was killed at 50% of its coldplug and
  again during its index decode, the CD-ROM on ahci's second port was under ata10, not ata4.

Seen the same in all those boots, and so kept as they are: MMC hosts (`mmc0`), virtio
indexes (virtio_pci probes its devices in PCI order, whenever it loads), PCI addresses. A
difference there is a real one.
After normalising, two devices can share a name (xHCI's two root hubs are both
`.../0000:00:1d.0/usb*`), so listings are compared as multisets (`pairs`).

One device is not compared driver by driver: QEMU's usb-net (0525:a4a2, the rich set's
xHCI hub port 3.1) is claimed by whichever of cdc_ether and cdc_subset registers first.
cdc_ether then binds both interfaces, cdc_subset only the data one. Uninterrupted boots
differ there (cdc_subset in udev's recorded boot, in one more udev boot and in a kmodd
boot; cdc_ether in another uninterrupted kmodd boot of bench/crash_kill.py, 2026-12-07), so
`pairs` counts it as one device driven by one of the two (`RACES`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from tests.e2e.vm.machine import VM

# Per path component: (pattern, replacement). Applied to each component in turn, first match.
_COMPONENT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"host\d+"), "host*"),
    (re.compile(r"target\d+(:\d+:\d+)"), r"target*\1"),
    (re.compile(r"\d+(:\d+:\d+:\d+)"), r"*\1"),
    (re.compile(r"ata\d+"), "ata*"),
    (re.compile(r"usb\d+"), "usb*"),
    (re.compile(r"\d+(-[\d.]+(?::\d+\.\d+)?)"), r"*\1"),
    (re.compile(r"hdaudioC\d+(D\d+)"), r"hdaudioC*\1"),
    (re.compile(r"([0-9A-F]{4}:[0-9A-F]{4}:[0-9A-F]{4})\.[0-9A-F]{4}"), r"\1.*"),
)

Pair = tuple[str, str]  # (normalised devpath, driver)

# Devices claimed by whichever of several drivers registers first: (normalised devpath of
# the device, its interfaces' drivers that race). See the module docstring.
RACES: tuple[tuple[str, frozenset[str]], ...] = (
    ("/devices/pci0000:00/0000:00:1d.0/usb*/*-3/*-3.1", frozenset({"cdc_ether", "cdc_subset"})),
)


def normalise(devpath: str) -> str:
    """`devpath` with the probe-order numbers (see the module docstring) replaced by `*`."""
    parts = []
    for part in devpath.split("/"):
        for pattern, replacement in _COMPONENT_RULES:
            if pattern.fullmatch(part):
                part = pattern.sub(replacement, part)
                break
        parts.append(part)
    return "/".join(parts)


def pairs(bindings: Iterable[Mapping[str, str]]) -> Counter[Pair]:
    """The (normalised devpath, driver) pairs of a listing, counted; a device of `RACES`
    bound by one of its racing drivers counts once, as (device, "one of: A, B")."""
    out: Counter[Pair] = Counter()
    raced: set[Pair] = set()
    for b in bindings:
        path = normalise(b["devpath"])
        race = next(((dev, drivers) for dev, drivers in RACES
                     if path.startswith(dev + "/") and b["driver"] in drivers), None)
        if race is None:
            out[path, b["driver"]] += 1
        else:
            raced.add((race[0], "one of: " + ", ".join(sorted(race[1]))))
    out.update(raced)
    return out


def listing(vm: VM) -> list[dict[str, str]]:
    """Every bound device in the guest now: devpath, driver, module ("" when built in)."""
    out = vm.sh("python3 -c 'import json, sys; sys.path.insert(0, \"/vm\"); "
                "import coldplug; print(json.dumps(coldplug.bindings()))'").out
    result: list[dict[str, str]] = json.loads(out)
    return result


def difference(want: Counter[Pair], got: Counter[Pair]) -> dict[str, list[Pair]]:
    """Pairs missing from `got` and extra in it (each as often as it is missing or extra);
    `unbound`: the devices of the missing pairs that have no driver at all in `got`."""
    missing, extra = want - got, got - want
    bound = {dev for dev, _ in got}
    return {"missing": sorted(missing.elements()), "extra": sorted(extra.elements()),
            "unbound": sorted(p for p in missing.elements() if p[0] not in bound)}
