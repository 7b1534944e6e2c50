"""Coldplug and hotplug measurements for any loader (udev is the anchor kmodd is held to).

Coldplug runs in the guest (guest/coldplug.py: exact guest clocks, no serial latency); the
host boots, runs it and fetches its JSON. Hotplug is driven from the host: QMP device_add,
the guest streams every kernel uevent back, latencies are host-clock offsets from sending
device_add to the arrival of `add@/module/X` (module live, i.e. after its probe) and `bind`
(driver bound); then device_del and the removal (DEVICE_DELETED, or the device gone from
query-pci: QEMU 7.2 sends no DEVICE_DELETED for intel-hda).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.vm import devices, image
from tests.e2e.vm.loaders import LOADERS, Loader
from tests.e2e.vm.machine import VM, GuestError

DATA_DIR = os.path.join(image.REPO, "tests", "data", "qemu")
HOTPLUG_TIMEOUT = 30.0
HOTPLUG_QUIET = 1.0  # after the expected events, wait this long without any uevent
UNPLUG_TIMEOUT = 15.0


def coldplug(vm: VM, loader: Loader, linger: float = 3.0) -> dict[str, Any]:
    """Run one coldplug with `loader` in a freshly booted guest; the in-guest report."""
    args = [*loader.coldplug_args(vm), "--linger", str(linger), "--out", "/run/coldplug.json"]
    vm.sh("python3 /vm/coldplug.py " + shlex.join(args), timeout=900)
    report: dict[str, Any] = json.loads(vm.get("/run/coldplug.json"))
    report["boot"] = vm.boot_info
    return report


def boot_coldplug(loader_name: str, set_name: str = "rich", cpu: str = "max",
                  guest: image.Guest | None = None) -> dict[str, Any]:
    with VM(devices=devices.SETS[set_name](), cpu=cpu, guest=guest,
            name=f"coldplug-{loader_name}") as vm:
        loader = LOADERS[loader_name]
        why = loader.unavailable(vm)
        if why:
            raise GuestError(f"loader {loader_name} unavailable: {why}")
        return coldplug(vm, loader)


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def summarize_coldplug(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Module set (and whether all runs agree), per-run and median timings."""
    sets = [frozenset(r["modules"]) for r in runs]
    per_run = [{
        "modules": len(r["modules"]),
        "modules_before": len(r["modules_before"]),
        "late_modules": r["late_modules"],
        "modules_after_snapshot": r.get("modules_after_snapshot", []),
        **{k: round(v, 2) for k, v in r["times"].items()},
        "uevents": r["uevents"], "synthetic_uevents": r["synthetic_uevents"],
        "insert_attempts": r["inserts"]["attempts"],
        "duplicate_inserts": r["inserts"]["duplicates"],
        "inserts_raced_with_the_kernels_modprobe": r["inserts"].get("raced", 0),
        "boot_host_seconds": r["boot"]["host_seconds"],
        "boot_init_uptime": r["boot"]["init_uptime"],
        "cpu_seconds": r.get("cpu_seconds", {}),
    } for r in runs]
    keys = [k for k in per_run[0] if isinstance(per_run[0][k], float | int)]
    first = runs[0]
    load_order = sorted(first["module_events"], key=lambda m: m["t"])
    return {
        "loader": first["loader"], "kernel": first["kernel"], "cpu": first["cpu"],
        "qemu": first["boot"]["qemu"], "devices": first["boot"]["devices"],
        "runs": len(runs),
        "identical_sets": all(s == sets[0] for s in sets),
        "modules": sorted(frozenset.intersection(*sets)),
        "modules_in_some_runs": sorted(frozenset.union(*sets) - frozenset.intersection(*sets)),
        "medians": {k: _median([float(p[k]) for p in per_run]) for k in keys},
        "per_run": per_run,
        "inserts_run1": first["inserts"],
        "load_order_run1": [[m["module"], round(m["t"], 3)] for m in load_order],
        "bindings_run1": first["bindings"],
        "loader_logs": [r.get("loader_log", "") for r in runs],
    }


def modalias_listing(report: dict[str, Any]) -> str:
    """The before/after modalias table of one coldplug report, one device per line."""
    lines = [f"# modaliases of every device under /sys/devices, kernel {report['kernel']}, "
             f"device set {report['boot']['devices']}, cpu {report['cpu']}",
             f"# before: {len(report['modaliases_before'])} devices, before any module loaded",
             f"# after: {len(report['modaliases_after'])} devices, after {report['loader']} "
             f"coldplug ({len(report['modules'])} modules)",
             "# columns: state (before|after), devpath, modalias"]
    for state in ("before", "after"):
        table = report[f"modaliases_{state}"]
        lines += [f"{state}\t{path}\t{alias}" for path, alias in sorted(table.items())]
    return "\n".join(lines) + "\n"


# --- hotplug -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HotplugDevice:
    label: str
    qmp: dict[str, str]
    modules: tuple[str, ...]  # must go live (add@/module/X), unless already loaded
    drivers: tuple[str, ...]  # must be bound (bind uevent with DRIVER=)
    pci_addr: str | None = None  # slot on pci.0, to see it leave query-pci
    extra: dict[str, str] = field(default_factory=dict)


def _pci(driver: str, slot: int, modules: tuple[str, ...], drivers: tuple[str, ...],
         **props: str) -> HotplugDevice:
    return HotplugDevice(driver, {"driver": driver, "id": f"hp-{driver}", "bus": "pci.0",
                                  "addr": f"{slot:#x}", **props}, modules, drivers,
                         pci_addr=f"{slot:#x}")


HOTPLUG_DEVICES: tuple[HotplugDevice, ...] = (
    _pci("e1000", 0x10, ("e1000",), ("e1000",)),
    _pci("virtio-net-pci", 0x11, ("virtio_net",), ("virtio-pci", "virtio_net")),
    _pci("intel-hda", 0x12, ("snd_hda_intel",), ("snd_hda_intel",)),
    HotplugDevice("usb-kbd", {"driver": "usb-kbd", "id": "hp-usb-kbd", "bus": "xhci.0"},
                  ("usbhid", "hid_generic"), ("usbhid", "hid-generic")),
    HotplugDevice("usb-storage", {"driver": "usb-storage", "id": "hp-usb-storage",
                                  "bus": "ehci.0", "drive": "hotdisk0"},
                  ("usb_storage", "sd_mod"), ("usb-storage", "sd")),
)
EXTRA_HOTPLUG_DEVICES: tuple[HotplugDevice, ...] = (
    _pci("e1000e", 0x13, ("e1000e",), ("e1000e",)),
    _pci("rtl8139", 0x14, ("8139cp",), ("8139cp",)),
    _pci("i6300esb", 0x15, ("i6300esb",), ("i6300ESB timer",)),
    _pci("virtio-blk-pci", 0x16, ("virtio_blk",), ("virtio_blk",), drive="hotdisk1"),
)


def _ev_summary(t0: float, t: float, ev: dict[str, Any]) -> dict[str, Any]:
    env = ev["env"]
    return {"dt": round(t - t0, 3), "action": ev["action"], "devpath": ev["devpath"],
            **{k: env[k] for k in ("DRIVER", "MODALIAS", "SUBSYSTEM") if k in env}}


def hotplug(vm: VM, dev: HotplugDevice, timeout: float = HOTPLUG_TIMEOUT,
            before_add: Callable[[], None] | None = None) -> dict[str, Any]:
    """device_add, wait for its modules and bindings, device_del, wait for the removal.

    `before_add` runs just before device_add (bench/hotplug_trace.py marks the guest's trace).
    """
    assert vm.qmp_client is not None
    loaded = vm.loaded_modules()
    want_modules = {m for m in dev.modules if m not in loaded}
    if before_add is not None:
        before_add()
    t0 = time.monotonic()
    vm.qmp("device_add", **dev.qmp)
    deadline = t0 + timeout
    module_t: dict[str, float] = {}
    bind_t: dict[str, float] = {}
    while True:
        evs = vm.uevents(t0)
        for t, ev in evs:
            if ev["action"] == "add" and ev["devpath"].startswith("/module/"):
                module_t.setdefault(ev["devpath"].split("/")[2], t - t0)
            elif ev["action"] == "bind" and "DRIVER" in ev["env"]:
                bind_t.setdefault(ev["env"]["DRIVER"], t - t0)
        done = want_modules <= module_t.keys() and set(dev.drivers) <= bind_t.keys()
        now = time.monotonic()
        last = evs[-1][0] if evs else t0
        if done and now - last >= HOTPLUG_QUIET:
            break
        if now > deadline:
            break
        time.sleep(0.05)
    added = [_ev_summary(t0, t, ev) for t, ev in vm.uevents(t0)]
    complete = want_modules <= module_t.keys() and set(dev.drivers) <= bind_t.keys()
    expected = [*(module_t.get(m) for m in want_modules), *(bind_t.get(d) for d in dev.drivers)]
    result: dict[str, Any] = {
        "device": dev.label, "complete": complete,
        "missing_modules": sorted(want_modules - module_t.keys()),
        "missing_bindings": sorted(set(dev.drivers) - bind_t.keys()),
        "modules_live": {m: round(v, 3) for m, v in sorted(module_t.items(), key=lambda x: x[1])},
        "bound": {d: round(v, 3) for d, v in bind_t.items()},
        "all_expected_seconds": round(max(x for x in expected if x is not None), 3)
        if complete and expected else None,
        "uevents_add": added,
    }
    result["unplug"] = unplug(vm, dev)
    return result


def unplug(vm: VM, dev: HotplugDevice) -> dict[str, Any]:
    assert vm.qmp_client is not None
    t0 = time.monotonic()
    vm.qmp("device_del", id=dev.qmp["id"])
    gone_t = None
    deadline = t0 + UNPLUG_TIMEOUT
    while time.monotonic() < deadline:
        if vm.qmp_client.wait_event("DEVICE_DELETED", 0.05, since=t0,
                                    match={"device": dev.qmp["id"]}):
            gone_t = time.monotonic() - t0
            break
        if dev.pci_addr is not None:
            slot = int(dev.pci_addr, 16)
            present = any(d["slot"] == slot for bus in vm.qmp("query-pci")
                          for d in bus["devices"] if d["bus"] == 0)
            if not present:
                gone_t = time.monotonic() - t0
                break
    time.sleep(HOTPLUG_QUIET)
    removed = [_ev_summary(t0, t, ev) for t, ev in vm.uevents(t0)
               if ev["action"] in ("remove", "unbind")]
    return {"gone_seconds": round(gone_t, 3) if gone_t is not None else None,
            "uevents_remove": removed}


def save(name: str, obj: Any) -> str:
    """Write a result into tests/data/qemu/ (JSON for objects, text for str)."""
    os.makedirs(DATA_DIR, exist_ok=True)
    path = os.path.join(DATA_DIR, name)
    with open(path, "w") as f:
        if isinstance(obj, str):
            f.write(obj)
        else:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
    return path
