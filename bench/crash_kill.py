"""A module loader killed mid-coldplug: what the boot ends with, against an uninterrupted boot.

    python3 bench/crash_kill.py [--loader udev --loader kmodd] [--at 10 --at 50 --at 90]
    python3 bench/crash_kill.py --rescore RESULTS.json...   # the table again, no boot

Per loader, one uninterrupted boot of the `rich` set (the reference), then one boot per kill
point: the loader is killed once the given percentage of its coldplug's modules are live
(counted in the guest from /proc/modules, every 20 ms; for kmodd, of the modules it loaded
itself in the reference boot, which the kernel's module_load trace attributes to it), and
the boot is let finish.
Both end states are taken once no module went live or away for 3 s: the live modules and
every device's bound driver (tests/e2e/vm/bindings.py normalises the probe-order numbers).

* kmodd: systemd as PID 1 with kmodd installed (tests/e2e/vm Init.SYSTEMD); SIGKILL to
  kmodd.service's MainPID; systemd restarts it (Restart=always, RestartSec=0); done once the
  new instance reports its coldplug done and the modules settled.
* udev: Debian's systemd-udevd + kmod as shipped (agent mode, as tests/e2e/vm/loaders.Udev
  runs it: kmodd's rules override removed, `udevadm trigger --type=devices --action=add`);
  SIGKILL to every worker of systemd-udevd (its children: each runs one event's rules and the
  kmod builtin's inserts in-process); udevd itself lives on and forks new workers; done once
  `udevadm settle` returns and the modules settled.

Prints, per loader and kill point, the modules missing and extra and the devices left
unbound (missing device-driver pairs whose device has no driver at all) compared with that
loader's uninterrupted boot. Full results go to $KMODD_E2E_CACHE/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.vm import bindings, crash, devices, image, manager
from tests.e2e.vm.machine import VM, Init

RESULTS = os.path.join(image.CACHE, "results")


def _kmodd_boot(guest: image.Guest, reference: dict[str, Any] | None,
                percent: int | None) -> dict[str, Any]:
    name = f"crash-kmodd-{percent if percent is not None else 'ref'}"
    append = manager.TRACE_MODULE_LOADS if reference is None else ""
    with VM(devices=devices.rich(), guest=guest, name=name, init=Init.SYSTEMD,
            append=append) as vm:
        out: dict[str, Any] = {"boot": vm.boot_info}
        if reference is not None and percent is not None:
            kill = crash.kill_kmodd_in_coldplug(vm, percent / 100,
                                                reference["coldplug_modules"])
            out["kill"] = {"pid": kill["pid"], "why": kill["why"], "live": len(kill["live"])}
            status = crash.wait_kmodd_restarted(vm, kill["pid"])
        else:
            crash.kmodd_pid(vm)
            status = manager.wait_kmodd_coldplug_done(vm)
        out["status"] = status
        out["state"] = crash.state(vm)
        if reference is None:
            out["coldplug_modules"] = crash.coldplug_modules(vm)
    return out


def _udev_boot(guest: image.Guest, reference: dict[str, Any] | None,
               percent: int | None) -> dict[str, Any]:
    name = f"crash-udev-{percent if percent is not None else 'ref'}"
    with VM(devices=devices.rich(), guest=guest, name=name) as vm:
        out: dict[str, Any] = {"boot": vm.boot_info}
        udevd = crash.start_udev_coldplug(vm)
        if reference is not None and percent is not None:
            kill = crash.kill_udev_workers_when(
                vm, udevd, live_count=crash.live_count(percent / 100, reference["state"]))
            out["kill"] = {"pids": kill["pids"], "why": kill["why"], "live": len(kill["live"])}
        crash.udev_settle(vm)
        out["state"] = crash.state(vm)
        out["udevd_log"] = vm.sh("dmesg | grep -i udev | tail -n 40", check=False).out
    return out


BOOTS = {"kmodd": _kmodd_boot, "udev": _udev_boot}


def _show(state: crash.State) -> dict[str, Any]:
    return {"modules": sorted(state.modules), "bindings": list(state.listing)}


def _state(shown: dict[str, Any]) -> crash.State:
    """A state back from its JSON form (`_show`)."""
    listing = tuple(shown["bindings"])
    return crash.State(frozenset(shown["modules"]), bindings.pairs(listing), listing)


def _print_table(results: dict[str, Any]) -> None:
    """Per loader and kill point, the difference from that loader's uninterrupted boot
    (computed from the states kept, with today's normalisation of the bindings)."""
    print(f"\n{'loader':6} {'killed at':>9} {'live at kill':>12} {'missing':>8} {'extra':>6} "
          f"{'unbound':>8}  modules missing; devices unbound; other bindings missing/extra")
    for loader, r in results["loaders"].items():
        reference = _state(r["reference"])
        for k in r["kills"]:
            d = crash.difference(reference, _state(k["state"]))
            unbound = d["devices unbound"]
            other_missing = [p for p in d["bindings missing"] if p not in unbound]
            print(f"{loader:6} {k['percent']:>8}% {k['kill']['live']:>12} "
                  f"{len(d['modules missing']):>8} {len(d['modules extra']):>6} "
                  f"{len(unbound):>8}  {' '.join(d['modules missing']) or '-'}; "
                  f"{' '.join(f'{dev} ({drv})' for dev, drv in unbound) or '-'}; "
                  f"{other_missing or '-'} / {d['bindings extra'] or '-'}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loader", action="append", choices=sorted(BOOTS),
                   help="repeatable (default: udev and kmodd)")
    p.add_argument("--at", action="append", type=int,
                   help="kill point, percent of the coldplug's modules (repeatable; "
                        "default 10, 50, 90)")
    p.add_argument("--rescore", nargs="+", metavar="JSON",
                   help="boot nothing: print the table of earlier runs' full results")
    args = p.parse_args(argv)
    if args.rescore:
        for path in args.rescore:
            with open(path) as f:
                print(f"{path}:")
                _print_table(json.load(f))
        return 0
    loaders = args.loader or ["udev", "kmodd"]
    points = args.at or [10, 50, 90]
    guest = image.build()
    started = time.monotonic()
    results: dict[str, Any] = {"loaders": {}, "host_load": [os.getloadavg()[0]]}
    for loader in loaders:
        boot = BOOTS[loader]
        ref = boot(guest, None, None)
        reference: crash.State = ref["state"]
        print(f"{loader}: uninterrupted boot, {len(reference.modules)} modules live, "
              f"{sum(reference.bindings.values())} devices bound", flush=True)
        runs = []
        for percent in points:
            r = boot(guest, ref, percent)
            diff = crash.difference(reference, r["state"])
            print(f"{loader}: killed at {percent}% ({r['kill']['why']}): "
                  f"{len(diff['modules missing'])} modules missing, "
                  f"{len(diff['devices unbound'])} devices unbound", flush=True)
            runs.append({"percent": percent, "kill": r["kill"], "difference": diff,
                         "state": _show(r["state"]), "boot": r["boot"]})
        results["loaders"][loader] = {"reference": _show(reference), "kills": runs,
                                      "coldplug_modules": sorted(ref.get("coldplug_modules",
                                                                         ()))}
    results["host_load"].append(os.getloadavg()[0])
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"crash-kill-{'-'.join(loaders)}-{int(time.time())}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=list)
    _print_table(results)
    print(f"\nfull results: {path} ({results['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
