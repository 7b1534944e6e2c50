"""Coldplug and hotplug speed of module loaders on the real kernel under QEMU (medians of N boots).

    python3 bench/e2e_loaders.py coldplug [-n 3] [--loader udev --loader kmodd] [--record]
    python3 bench/e2e_loaders.py hotplug  [-n 3] [--loader udev --loader kmodd] [--extra]

Coldplug boots the `rich` set once per run and loader (loaders interleaved, their order
reversed every other run, so host noise spreads evenly) and measures, in the guest, from the
loader's start (udev: from `udevadm trigger`) to the last module going live
(`add@/module/X`). Hotplug boots `usbhost`, lets the loader finish its coldplug, then plugs
each device through QMP: seconds from device_add to every expected module live and driver
bound. With more than one loader the table shows each
loader's median over the first one's (the anchor, udev). `kmodd` is started from its systemd
unit (see tests/e2e/vm/loaders.py); it is reported as unavailable until the checkout has one.
The host load average is recorded with each run: this machine may be shared, and TCG timings
move with it. --record writes udev's summary (and for coldplug the modalias list) into
tests/data/qemu/. Full results go to $KMODD_E2E_CACHE/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.vm import anchor, devices, image
from tests.e2e.vm.loaders import LOADERS
from tests.e2e.vm.machine import VM

RESULTS = os.path.join(image.CACHE, "results")


def _turns(loaders: list[str], run: int) -> list[str]:
    """The loaders' order in run `run` (from 1): as given, then reversed, and so on, so that
    neither loader always boots right after the other (ABBA...)."""
    return loaders if run % 2 == 1 else loaders[::-1]


def _unavailable(vm: VM, name: str) -> str | None:
    return LOADERS[name].unavailable(vm)


def _union_seconds(spans: list[tuple[int, int]]) -> float:
    """Seconds covered by at least one of the [start, end] microsecond spans."""
    total, end = 0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return round(total / 1e6, 2)


def kmodd_timings(vm: VM) -> dict[str, Any]:
    """Where kmodd's coldplug time went, from the daemon's own records (kmodctl --json).

    `ready`: start to READY=1 (interpreter, imports, index mapped, sockets); `span`: first
    device queued to last device done; `insert_busy`: time during which at least one
    finit_module (module init in the kernel) was in flight, `insert_sum` their total;
    `kmodd_only`: the rest of the span, when kmodd was deciding or waiting and no module
    was being inserted.
    """
    def ask(what: str) -> Any:
        return json.loads(vm.sh(f"kmodctl --json {what}", timeout=120).out)

    status = ask("status")["status"]
    devices = [d for d in ask("devices")["devices"]
               if d.get("queued_usec") is not None and d.get("finished_usec") is not None]
    timed = [m for m in ask("modules")["modules"]
             if m.get("started_usec") is not None and m.get("finished_usec") is not None]
    inserts = [(m["started_usec"], m["finished_usec"]) for m in timed]
    first = min(d["queued_usec"] for d in devices)
    last = max(d["finished_usec"] for d in devices)
    busy = _union_seconds(inserts)
    span = round((last - first) / 1e6, 2)
    return {
        "ready": round((status.get("ready_usec") or 0) / 1e6, 2),
        "span": span,
        "insert_busy": busy,
        "insert_sum": round(sum(b - a for a, b in inserts) / 1e6, 2),
        "kmodd_only": round(span - busy, 2),
        "inserts": len(inserts),
        # (module, insert started, finished), seconds after the first device was queued
        "per_module": sorted((m["name"], round((m["started_usec"] - first) / 1e6, 2),
                              round((m["finished_usec"] - first) / 1e6, 2)) for m in timed),
    }


def bench_coldplug(args: argparse.Namespace, guest: image.Guest) -> dict[str, Any]:
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in args.loader}
    skipped: dict[str, str] = {}
    for run in range(1, args.n + 1):
        for name in _turns(args.loader, run):
            if name in skipped:
                continue
            load = os.getloadavg()[0]
            with VM(devices=devices.SETS[args.set](), cpu=args.cpu, guest=guest,
                    name=f"bench-coldplug-{name}") as vm:
                why = _unavailable(vm, name)
                if why:
                    skipped[name] = why
                    print(f"{name}: unavailable: {why}", flush=True)
                    continue
                r = anchor.coldplug(vm, LOADERS[name])
                if name == "kmodd":
                    r["kmodd_timings"] = kmodd_timings(vm)
            r["host_load"] = [load, os.getloadavg()[0]]
            reports[name].append(r)
            t = r["times"]
            print(f"run {run} {name}: {len(r['modules'])} modules, last module "
                  f"{t.get('last_module', float('nan')):.2f} s, done {t['settle_end']:.2f} s "
                  f"(boot {r['boot']['host_seconds']} s, host load {load:.1f})", flush=True)
            if r.get("cpu_seconds"):
                print("    guest CPU to the last module: " + ", ".join(
                    f"{k} {v} s" for k, v in r["cpu_seconds"].items()), flush=True)
            if "kmodd_timings" in r:
                print("    kmodd's own timings: " + ", ".join(
                    f"{k} {v}" for k, v in r["kmodd_timings"].items() if k != "per_module"),
                    flush=True)
    out: dict[str, Any] = {"skipped": skipped, "loaders": {}}
    for name, runs in reports.items():
        if runs:
            s = anchor.summarize_coldplug(runs)
            s["host_load"] = [r["host_load"] for r in runs]
            if "kmodd_timings" in runs[0]:
                s["kmodd_timings"] = [r["kmodd_timings"] for r in runs]
            out["loaders"][name] = s
    if args.record and "udev" in reports and reports["udev"]:
        tag = f"{args.set}-{args.cpu}"
        print("recorded:", anchor.save(f"coldplug-udev-{tag}.json", out["loaders"]["udev"]))
        if args.set == "rich" and args.cpu == "max":
            print("recorded:", anchor.save("modaliases-rich.txt",
                                           anchor.modalias_listing(reports["udev"][0])))
    _print_coldplug_table(out)
    return out


def _print_coldplug_table(out: dict[str, Any]) -> None:
    rows = out["loaders"]
    if not rows:
        return
    anchor_name = next(iter(rows))
    base = rows[anchor_name]["medians"].get("last_module")
    print(f"\n{'loader':8} {'runs':>4} {'modules':>7} {'same set':>8} {'last module (median)':>21}"
          f" {'vs ' + anchor_name:>10}")
    for name, s in rows.items():
        last = s["medians"].get("last_module")
        ratio = f"{last / base:.2f}x" if last and base else "-"
        print(f"{name:8} {s['runs']:>4} {len(s['modules']):>7} {s['identical_sets']!s:>8} "
              f"{last:>19.2f} s {ratio:>10}")
    if len(rows) > 1:
        sets = {name: set(s["modules"]) for name, s in rows.items()}
        for name, got in sets.items():
            want = sets[anchor_name]
            if got != want:
                print(f"{name} vs {anchor_name}: extra {sorted(got - want)}, "
                      f"missing {sorted(want - got)}")


def bench_hotplug(args: argparse.Namespace, guest: image.Guest) -> dict[str, Any]:
    devs = anchor.HOTPLUG_DEVICES + (anchor.EXTRA_HOTPLUG_DEVICES if args.extra else ())
    results: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in args.loader}
    skipped: dict[str, str] = {}
    for run in range(1, args.n + 1):
        for name in _turns(args.loader, run):
            if name in skipped:
                continue
            with VM(devices=devices.usbhost(), cpu=args.cpu, guest=guest,
                    name=f"bench-hotplug-{name}") as vm:
                why = _unavailable(vm, name)
                if why:
                    skipped[name] = why
                    print(f"{name}: unavailable: {why}", flush=True)
                    continue
                LOADERS[name].start(vm)
                vm.uevents_start(stream=True)
                time.sleep(1.0)
                per_dev = []
                for d in devs:
                    r = anchor.hotplug(vm, d)
                    r["host_load"] = os.getloadavg()[0]
                    per_dev.append(r)
                    print(f"run {run} {name} {d.label}: all expected "
                          f"{r['all_expected_seconds']} s, unplug {r['unplug']['gone_seconds']} s"
                          f" {'' if r['complete'] else '(INCOMPLETE)'}", flush=True)
            results[name].append(per_dev)
    summary: dict[str, Any] = {"skipped": skipped, "loaders": {}}
    for name, runs in results.items():
        if not runs:
            continue
        table = {}
        for i, d in enumerate(devs):
            vals = [r[i]["all_expected_seconds"] for r in runs
                    if r[i]["all_expected_seconds"] is not None]
            gone = [r[i]["unplug"]["gone_seconds"] for r in runs
                    if r[i]["unplug"]["gone_seconds"] is not None]
            table[d.label] = {
                "all_expected_median": round(statistics.median(vals), 3) if vals else None,
                "unplug_median": round(statistics.median(gone), 3) if gone else None,
                "complete_runs": len(vals), "runs": len(runs),
                "modules_live_run1": runs[0][i]["modules_live"],
                "bound_run1": runs[0][i]["bound"],
            }
        summary["loaders"][name] = {"devices": table, "raw": runs}
    if args.record and "udev" in summary["loaders"]:
        print("recorded:", anchor.save("hotplug-udev-usbhost.json", summary["loaders"]["udev"]))
    rows = summary["loaders"]
    if rows:
        anchor_name = next(iter(rows))
        print(f"\n{'device':16}" + "".join(f" {n + ' (s)':>12}" for n in rows)
              + (f" {'ratio':>8}" if len(rows) > 1 else ""))
        for d in devs:
            vals = [rows[n]["devices"][d.label]["all_expected_median"] for n in rows]
            line = f"{d.label:16}" + "".join(
                f" {v:>12.3f}" if v is not None else f" {'-':>12}" for v in vals)
            base = rows[anchor_name]["devices"][d.label]["all_expected_median"]
            if len(rows) > 1 and base and vals[-1]:
                line += f" {vals[-1] / base:>7.2f}x"
            print(line)
    return summary


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("coldplug", "hotplug"))
    p.add_argument("-n", type=int, default=3, help="boots per loader (default 3)")
    p.add_argument("--loader", action="append", choices=sorted(LOADERS),
                   help="repeatable; the first is the reference (default: udev)")
    p.add_argument("--cpu", default="max")
    p.add_argument("--set", default="rich", choices=sorted(devices.SETS),
                   help="coldplug device set (default rich)")
    p.add_argument("--extra", action="store_true", help="hotplug: more devices")
    p.add_argument("--record", action="store_true",
                   help="write udev's results to tests/data/qemu/ (coldplug: with modaliases)")
    args = p.parse_args(argv)
    args.loader = args.loader or ["udev"]
    guest = image.build()
    t = time.monotonic()
    out = bench_coldplug(args, guest) if args.what == "coldplug" else bench_hotplug(args, guest)
    out["wall_seconds"] = round(time.monotonic() - t, 1)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{args.what}-{'-'.join(args.loader)}-{int(time.time())}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nfull results: {path} ({out['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
