"""When kmodd asks the kernel to probe a device again, and what came of it.

A module's init probes the devices it drives in the inserting thread. When that thread's
process is killed during the init, allocations and kernel threads refuse it (a fatal signal
is pending), the probes fail ("failed to allocate host", "Insufficient memory"), and the
module still goes live with its devices unbound. A new kmodd sees the module live and has
nothing to load, so without help the disk behind such a controller never appears. Every start
is therefore a recovery: the device gets one re-probe through the kernel's own interface, the
bus's `drivers_probe` file, which runs the kernel's usual matching (driver_override included).

The rules (`should_reprobe`), each with the legitimate case it protects:

1. Only a device that already existed: one a scan found (coldplug, resync), or a synthetic
   `add` (written to its `uevent` file, as `udevadm trigger` does at boot: the kernel marks
   it SYNTH_UUID), never a device the kernel has just added: for that one it has just
   probed every registered driver.
2. Only a device without a driver. A device another driver claimed is bound, and left alone.
3. Only when one of the device's resolved modules was live before this instance started
   (loaded by a previous instance, the initramfs or anyone else) and registers a driver on the
   device's bus (`/sys/module/M/drivers/BUS:NAME`). A module this instance inserts probes the
   device in a living process; a device it leaves unbound was declined, which is an outcome
   told as it is, not a reason to probe again. A module that drives nothing on the bus (a CPU
   feature module matched by a cpu modalias) is not a driver of the device.
4. Not when the device's `driver_override` is set (the admin chose its driver), not when the
   bus's `drivers_autoprobe` is 0 (the admin turned automatic binding off), and not when the
   kernel announced that the device lost its driver during this boot while a kmodd watched
   (someone unbound it by hand, or its driver went away: kmodd does not undo that).
5. Once per device per instance: a device that stays unbound is recorded `still-unbound` and
   not probed again while this instance runs, so a driver that declines a device on purpose
   costs one probe per start and can never cause a loop.

`daemon.recovery` bounds the number (REPROBE_MAX per instance) and the time (each probe runs
in a thread and is waited for at most a deadline; in-flight probes are few at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class ReprobeResult(StrEnum):
    """What came of one re-probe."""

    BOUND = "bound"  # a driver took the device
    STILL_UNBOUND = "still-unbound"  # the kernel probed it; no driver took it
    TIMED_OUT = "timed-out"  # the probe had not returned by the deadline
    FAILED = "failed"  # the kernel refused the request (errno)


@dataclass(frozen=True, slots=True)
class BindingFacts:
    """What sysfs says about a device's binding, read just before the decision."""

    bus: str | None  # the bus the device is on, None for a class device or a vanished one
    driver: str | None  # the bound driver's name
    driver_override: str  # "" when unset
    autoprobe: bool  # the bus's drivers_autoprobe
    module_drivers: Mapping[str, tuple[str, ...]]  # module -> its drivers on `bus`


@dataclass(frozen=True, slots=True)
class Verdict:
    probe: bool
    reason: str  # why (or why not), in words for the record
    modules: tuple[str, ...] = ()  # the driver modules that justify it


def should_reprobe(facts: BindingFacts, candidates: Iterable[str],
                   live_before_start: frozenset[str], *, unbound_while_watched: bool,
                   reprobed: bool) -> Verdict:
    """Rules 2-5 for one device (rule 1 is the caller's: only scanned devices come here).
    `candidates`: the modules the device's modalias resolved to that are live."""
    if reprobed:
        return Verdict(False, "it was re-probed already by this instance")
    if facts.bus is None:
        return Verdict(False, "it is not on a bus (or has gone)")
    if facts.driver is not None:
        return Verdict(False, f"it is bound to {facts.driver}")
    before = [m for m in candidates if m in live_before_start]
    drivers = [m for m in before if facts.module_drivers.get(m)]
    if not drivers:
        return Verdict(False, "none of its modules that were live before this instance "
                              f"started has a driver on bus {facts.bus}")
    if facts.driver_override:
        return Verdict(False, f"its driver_override is set ({facts.driver_override}): the "
                              "admin chose its driver")
    if not facts.autoprobe:
        return Verdict(False, f"drivers_autoprobe is 0 on bus {facts.bus}: automatic "
                              "binding is turned off")
    if unbound_while_watched:
        return Verdict(False, "the kernel announced that it lost its driver during this "
                              "boot: kmodd does not undo an unbind")
    named = ", ".join(f"{m} ({', '.join(facts.module_drivers[m])})" for m in drivers)
    return Verdict(True, f"it had no driver, although its driver module {named} was live "
                         "before this instance started", tuple(drivers))
