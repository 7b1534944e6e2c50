"""Killing a module loader at a chosen moment, and what a boot ends with (modules, bindings).

Used by tests/e2e/test_crash_coldplug.py (kmodd under systemd, killed and restarted by its
unit's Restart=) and bench/crash_kill.py (the same kills, and udev's workers killed alike).
The kill itself is made in the guest by the agent (`kill_when`), which polls /proc every
20 ms: no serial round trip between the moment seen and the signal.

    with VM(devices.rich_hotplug(), init=Init.SYSTEMD) as vm:
        killed = kill_kmodd_when(vm, live_count=80)
        status = wait_kmodd_restarted(vm, killed["pid"])
        print(difference(reference, state(vm)))
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kmodd.core.autoload.loadrecords import LoadedBy
from tests.e2e.vm import anchor, bindings, loaders, manager
from tests.e2e.vm.machine import VM, GuestError

UNIT = "kmodd.service"
SETTLE_QUIET = loaders.QUIET_SECONDS
RESTART_TIMEOUT = 120.0
KILL_TIMEOUT = 600.0
# A kmodd worker thread that ran this many clock ticks (1/100 s) of user time after its
# coldplug is building an index (the decode after coldplug, a reload's new snapshot): the
# loader's threads spend their time in the kernel (finit_module), not in user space.
INDEX_BUILD_TICKS = 20
# The usb-storage hotplug (anchor's device: ehci.0, drive=hotdisk0).
USB_DISK = next(d for d in anchor.HOTPLUG_DEVICES if d.label == "usb-storage")
HOTPLUG_TIMEOUT = 60.0
# kmodd's words in the journal (kmodd/daemon/service.py) that mark where a kill fell.
COLDPLUG_DONE = "Coldplug done: "
DECODED = "Decoded module index generation "
RELOADING = "Reloading the module index and configuration"
RELOADED = "Loaded module index generation "


@dataclass(frozen=True)
class State:
    """What a boot ends with: the live modules and the (normalised devpath, driver) pairs."""

    modules: frozenset[str]
    bindings: Counter[bindings.Pair]
    listing: tuple[dict[str, str], ...]  # the raw bindings, for failure messages


def state(vm: VM, quiet: float = SETTLE_QUIET) -> State:
    """Once no module went live or away for `quiet` s: the modules and the bindings."""
    modules = frozenset(vm.wait_modules_settled(quiet=quiet))
    listing = bindings.listing(vm)
    return State(modules, bindings.pairs(listing), tuple(listing))


def difference(want: State, got: State) -> dict[str, list[Any]]:
    """Modules and bindings missing from `got` or extra in it; unbound devices."""
    b = bindings.difference(want.bindings, got.bindings)
    return {"modules missing": sorted(want.modules - got.modules),
            "modules extra": sorted(got.modules - want.modules),
            "bindings missing": b["missing"], "bindings extra": b["extra"],
            "devices unbound": b["unbound"]}


SAME: dict[str, list[Any]] = {"modules missing": [], "modules extra": [],
                              "bindings missing": [], "bindings extra": [], "devices unbound": []}


# --- kmodd under systemd ---------------------------------------------------------------------
def kmodd_pid(vm: VM, timeout: float = manager.ACTIVE_TIMEOUT) -> int:
    """kmodd.service's MainPID, as soon as it has one (while it starts, too)."""
    deadline = time.monotonic() + timeout
    while True:
        pid = int(manager.show(vm, UNIT, "MainPID")["MainPID"])
        if pid:
            return pid
        if time.monotonic() > deadline:
            raise GuestError(f"{UNIT} has no main process after {timeout} s:\n"
                             + manager.describe(vm, UNIT))
        time.sleep(0.1)


def kill_when(vm: VM, pid: int, timeout: float = KILL_TIMEOUT, **condition: Any) -> dict[str, Any]:
    """SIGKILL `pid` in the guest once `condition` holds (guest/agent.py `kill_when`)."""
    r = vm.call("kill_when", reply_timeout=timeout + 30, pid=pid, sig=int(signal.SIGKILL),
                timeout=timeout, **condition)
    if not r["killed"]:
        raise GuestError(f"pid {pid} not killed ({condition}): {r['why']}")
    return {**r, "pid": pid}


def kill_kmodd_when(vm: VM, **condition: Any) -> dict[str, Any]:
    """SIGKILL kmodd.service's main process once `condition` holds."""
    return kill_when(vm, kmodd_pid(vm), **condition)


def coldplug_modules(vm: VM) -> frozenset[str]:
    """The live modules kmodd loaded itself: their first load was a task named kmodd, in a
    guest booted with manager.TRACE_MODULE_LOADS (systemd's own, and those the kernel's
    request_module had modprobe load, are not kmodd's)."""
    by_task = manager.module_loads_by_task(vm)
    return frozenset(m for m, comm in by_task.items() if comm == "kmodd") & \
        frozenset(vm.loaded_modules())


def kill_kmodd_in_coldplug(vm: VM, fraction: float, coldplug: frozenset[str]) -> dict[str, Any]:
    """SIGKILL kmodd once `fraction` of `coldplug` (the modules kmodd itself loaded in an
    uninterrupted boot: `coldplug_modules`) are live. (Counting every live module instead,
    10% of the rich set fell before kmodd's READY=1, while systemd loaded its own modules.)"""
    threshold = max(1, round(fraction * len(coldplug)))
    killed = kill_kmodd_when(vm, live_count=threshold, among=sorted(coldplug))
    return {**killed, "threshold": threshold, "of": len(coldplug)}


def wait_kmodd_restarted(vm: VM, killed: int, timeout: float = RESTART_TIMEOUT) -> dict[str, Any]:
    """Wait until systemd restarted kmodd (a main process other than `killed`) and the new
    instance reported its coldplug done; its status."""
    deadline = time.monotonic() + timeout
    while True:
        shown = manager.show(vm, UNIT, "MainPID", "ActiveState")
        if shown["ActiveState"] == "active" and int(shown["MainPID"]) not in (0, killed):
            break
        if time.monotonic() > deadline:
            raise GuestError(f"{UNIT} not restarted within {timeout} s after pid {killed} was "
                             f"killed:\n" + manager.describe(vm, UNIT))
        time.sleep(manager.POLL_SECONDS)
    while True:
        status = manager.wait_kmodd_coldplug_done(vm)
        if status["pid"] != killed:
            return status
        time.sleep(manager.POLL_SECONDS)


def kmodctl_json(vm: VM, command: str) -> Any:
    return json.loads(vm.sh(f"kmodctl --json {command}", timeout=120).out)


def journal(vm: VM) -> list[dict[str, Any]]:
    """Every record kmodd sent to the journal in this boot (by SYSLOG_IDENTIFIER, which the
    sender names itself: a record of a killed process keeps it)."""
    out = vm.sh("journalctl --no-pager -b -o json SYSLOG_IDENTIFIER=kmodd", timeout=120).out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def messages_of(records: list[dict[str, Any]], pid: int) -> list[str]:
    return [str(r.get("MESSAGE", "")) for r in records if r.get("_PID") == str(pid)]


def wait_journal(vm: VM, pid: int, prefix: str, timeout: float = 300.0) -> str:
    """The first message of process `pid` that starts with `prefix`, once it is logged."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in messages_of(journal(vm), pid) if m.startswith(prefix)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise GuestError(f"kmodd (pid {pid}) logged no {prefix!r} within {timeout} s")
        time.sleep(1.0)


def start_reload(vm: VM) -> None:
    """`kmodctl reload` in the background (it waits for the reload, which a kill cuts short)."""
    vm.sh("setsid sh -c 'kmodctl reload > /run/kmodctl-reload.out 2>&1' "
          "< /dev/null > /dev/null 2>&1 &")


def hotplug(vm: VM, dev: anchor.HotplugDevice = USB_DISK) -> float:
    """device_add through QMP; the host time it was sent."""
    t = time.monotonic()
    vm.qmp("device_add", **dev.qmp)
    return t


def wait_bound(vm: VM, drivers: tuple[str, ...], since: float,
               timeout: float = HOTPLUG_TIMEOUT) -> None:
    """Wait until a `bind` uevent with each of `drivers` arrived since `since` (host time)."""
    deadline = time.monotonic() + timeout
    while True:
        bound = {ev["env"].get("DRIVER") for _, ev in vm.uevents(since) if ev["action"] == "bind"}
        if set(drivers) <= bound:
            return
        if time.monotonic() > deadline:
            raise GuestError(f"not bound within {timeout} s: {sorted(set(drivers) - bound)}")
        time.sleep(0.1)


def live_count(fraction: float, reference: State) -> int:
    """How many live modules make `fraction` of the reference's (at least one): for a loader
    that starts with none live (udev, started by the agent)."""
    return max(1, round(fraction * len(reference.modules)))


# --- udev (agent mode, as loaders.Udev runs it) ------------------------------------------------
def start_udev_coldplug(vm: VM) -> int:
    """Debian's udev as shipped (kmodd's rules override removed), its coldplug triggered and
    not waited for; the main systemd-udevd's pid."""
    vm.sh("python3 -c 'import sys; sys.path.insert(0, \"/vm\"); "
          "import coldplug; coldplug.unmask_udev_rules()'")
    vm.sh(f"{loaders.UDEVD} --daemon && udevadm control --ping")
    pid = int(vm.sh("pgrep -o -x systemd-udevd").out.split()[0])
    vm.sh("udevadm trigger --type=devices --action=add")
    return pid


def kill_udev_workers_when(vm: VM, udevd: int, **condition: Any) -> dict[str, Any]:
    """SIGKILL every worker of systemd-udevd (its children: each runs one event's rules, the
    kmod builtin's inserts among them) once `condition` holds."""
    r = vm.call("kill_when", reply_timeout=KILL_TIMEOUT + 30, pid=udevd, children=True,
                sig=int(signal.SIGKILL), timeout=KILL_TIMEOUT, **condition)
    if not r["killed"]:
        raise GuestError(f"udev workers not killed ({condition}): {r['why']}")
    return r


def udev_settle(vm: VM) -> None:
    vm.sh("udevadm settle --timeout=600", timeout=650, check=False)


# --- kmodd's own records ------------------------------------------------------------------------
#: Every answer kmodd gives to "who loaded it" (a live module without one is unexplained).
LOADED_BY = tuple(who.value for who in LoadedBy)


@dataclass(frozen=True)
class Records:
    """What kmodd says about the boot so far (its control socket and its journal records)."""

    status: dict[str, Any]  # `kmodctl status --json`: "status"
    modules: dict[str, dict[str, Any]]  # `kmodctl modules --json`, by name
    devices: list[dict[str, Any]]  # `kmodctl devices --json`
    live: frozenset[str]  # /proc/modules as the records were read
    journal_modules: frozenset[str]  # KMODD_MODULE= of kmodd's journal records of this boot
    journal: tuple[dict[str, Any], ...]  # those records


def records(vm: VM) -> Records:
    modules = kmodctl_json(vm, "modules")["modules"]
    entries = journal(vm)
    return Records(
        status=kmodctl_json(vm, "status")["status"],
        modules={m["name"]: m for m in modules},
        devices=kmodctl_json(vm, "devices")["devices"],
        live=frozenset(vm.loaded_modules()),
        journal_modules=frozenset(str(r["KMODD_MODULE"]) for r in entries
                                  if "KMODD_MODULE" in r),
        journal=tuple(entries))
