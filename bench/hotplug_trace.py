#!/usr/bin/env python3
"""Where a hotplug's time goes, from the guest kernel's own trace: kmodd next to udev.

    python3 bench/hotplug_trace.py [-n 1] [--loader udev --loader kmodd] [--device e1000 ...]

Boots the e2e guest (`usbhost` set, TCG, one vCPU) once per loader and run, and while each
device of bench/e2e_loaders.py's hotplug set is added through QMP, records the kernel's
tracepoints: every context switch (`sched_switch`), `finit_module` entry and exit, and
`module_load`. One vCPU means the switches say exactly which task had the CPU and for how
long. From a mark the harness writes into the trace just before `device_add` to the last
`finit_module` returning, per device:

* first insert: ms from the mark to the first finit_module (the kernel brings the device up,
  the loader receives its uevent, decides, plans and opens the file);
* inserts, and the kernel's share: CPU time inside finit_module (module load, init, probe);
* the loader's own CPU outside finit_module (kmodd: its threads; udev: systemd-udevd and
  its workers), and everyone else's (the harness streaming uevents, kernel threads), idle;
* gap: the median time between one finit_module returning and the same thread's next one
  entering (one step of a load chain, as a loader walks the dependencies).

Numbers move with the host's load (TCG), so compare loaders booted in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRACEFS = "/sys/kernel/tracing"
EVENTS = ("sched/sched_switch", "syscalls/sys_enter_finit_module",
          "syscalls/sys_exit_finit_module", "module/module_load")
MARK = "kmodd-bench-mark"

_LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+\[\d+\]\s+\S+\s+(?P<t>\d+\.\d+): "
                   r"(?P<event>\w+)(?::\s?|\s?\(|\s)(?P<rest>.*)$")
_SWITCH = re.compile(r"prev_comm=(?P<prev>.*?) prev_pid=(?P<prev_pid>\d+) .*?"
                     r"next_comm=(?P<next>.*?) next_pid=(?P<next_pid>\d+)")


@dataclass
class DeviceTrace:
    """What one hotplug's trace says (times in ms)."""

    first_insert: float | None = None
    inserts: int = 0
    modules: list[str] = field(default_factory=list)
    in_finit: float = 0.0
    loader_outside: float = 0.0
    others: float = 0.0
    idle: float = 0.0
    window: float = 0.0
    gaps: list[float] = field(default_factory=list)

    @property
    def gap_median(self) -> float | None:
        return statistics.median(self.gaps) if self.gaps else None


def _us(stamp: str) -> int:
    """A trace timestamp (seconds, six decimals) in whole microseconds: exact sums."""
    whole, _, frac = stamp.partition(".")
    return int(whole) * 1_000_000 + int(frac.ljust(6, "0")[:6])


def is_loader_task(comm: str) -> bool:
    return comm in ("kmodd", "systemd-udevd", "(udev-worker)") or comm.startswith("kmodd-")


def analyse(text: str) -> DeviceTrace:
    """Read one hotplug's trace (the `trace` file's text, mark first) into a DeviceTrace."""
    events = [m for m in map(_LINE.match, text.splitlines()) if m]
    out = DeviceTrace()
    mark = next((_us(m["t"]) for m in events
                 if m["event"] == "tracing_mark_write" and MARK in m["rest"]), None)
    exits = [_us(m["t"]) for m in events if m["event"] == "sys_finit_module"
             and m["rest"].startswith("->")]
    if mark is None or not exits:
        return out
    end = exits[-1]
    out.window = (end - mark) / 1000
    inside: set[int] = set()  # pids inside finit_module
    last_exit: dict[int, int] = {}
    names: dict[int, str] = {}
    busy: Counter[tuple[int, bool]] = Counter()  # (pid, inside finit) -> microseconds
    since = mark  # the running task's current stretch began (a line's task is the running one)
    for m in events:
        t, pid = _us(m["t"]), int(m["pid"])
        if t < mark or t > end:
            continue
        event, rest = m["event"], m["rest"]
        if event == "sys_finit_module":
            busy[(pid, pid in inside)] += t - since
            since = t
            if rest.startswith("->"):
                inside.discard(pid)
                last_exit[pid] = t
            else:
                out.inserts += 1
                if out.first_insert is None:
                    out.first_insert = (t - mark) / 1000
                if pid in last_exit:
                    out.gaps.append((t - last_exit.pop(pid)) / 1000)
                inside.add(pid)
        elif event == "module_load":
            out.modules.append(rest.split()[0] if rest.split() else "?")
        elif event == "sched_switch":
            s = _SWITCH.search(rest)
            if s is None:
                continue
            prev = int(s["prev_pid"])
            names[prev] = s["prev"]
            busy[(prev, prev in inside)] += t - since
            since = t
    for (pid, in_finit), us in busy.items():
        ms = us / 1000
        if pid == 0:
            out.idle += ms
        elif in_finit:
            out.in_finit += ms
        elif is_loader_task(names.get(pid, "")):
            out.loader_outside += ms
        else:
            out.others += ms
    return out


def trace_boot(loader: str, labels: list[str]) -> dict[str, DeviceTrace]:
    from tests.e2e.vm import anchor, devices, image
    from tests.e2e.vm.loaders import LOADERS
    from tests.e2e.vm.machine import VM

    guest = image.build()
    out: dict[str, DeviceTrace] = {}
    with VM(devices=devices.usbhost(), cpu="max", guest=guest,
            name=f"trace-{loader}") as vm:
        LOADERS[loader].start(vm)
        vm.uevents_start(stream=True)
        time.sleep(1.0)
        enable = "; ".join(f"echo 1 > {TRACEFS}/events/{e}/enable" for e in EVENTS)
        vm.sh(f"mountpoint -q {TRACEFS} || mount -t tracefs nodev {TRACEFS}; "
              f"echo 8192 > {TRACEFS}/buffer_size_kb; {enable}; echo 1 > {TRACEFS}/tracing_on")
        for dev in anchor.HOTPLUG_DEVICES:
            if dev.label not in labels:
                continue
            def mark() -> None:
                vm.sh(f"echo > {TRACEFS}/trace; echo {MARK} > {TRACEFS}/trace_marker")

            result = anchor.hotplug(vm, dev, before_add=mark)
            out[dev.label] = analyse(vm.sh(f"cat {TRACEFS}/trace", timeout=120).out)
            print(f"{loader} {dev.label}: {result['all_expected_seconds']} s", flush=True)
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main(argv: list[str]) -> int:
    from tests.e2e.vm import anchor

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=1, help="boots per loader (default 1)")
    p.add_argument("--loader", action="append", choices=("udev", "kmodd"))
    p.add_argument("--device", action="append",
                   choices=[d.label for d in anchor.HOTPLUG_DEVICES])
    args = p.parse_args(argv)
    loaders = args.loader or ["udev", "kmodd"]
    labels = args.device or [d.label for d in anchor.HOTPLUG_DEVICES]
    runs: dict[str, list[dict[str, DeviceTrace]]] = {name: [] for name in loaders}
    for n in range(args.n):
        for name in loaders if n % 2 == 0 else loaders[::-1]:  # neither always boots second
            runs[name].append(trace_boot(name, labels))
    print(f"\n{'device':15} {'loader':6} {'first insert':>12} {'inserts':>7} {'in finit':>9} "
          f"{'loader cpu':>10} {'others':>7} {'idle':>6} {'gap (med)':>9}   (ms, medians "
          f"of {args.n} boot(s))")
    for label in labels:
        for name in loaders:
            traces = [r[label] for r in runs[name] if label in r]

            def med(values: list[float | None]) -> float | None:
                known = [v for v in values if v is not None]
                return statistics.median(known) if known else None

            print(f"{label:15} {name:6} {_fmt(med([t.first_insert for t in traces])):>12} "
                  f"{_fmt(med([t.inserts for t in traces])):>7} "
                  f"{_fmt(med([t.in_finit for t in traces])):>9} "
                  f"{_fmt(med([t.loader_outside for t in traces])):>10} "
                  f"{_fmt(med([t.others for t in traces])):>7} "
                  f"{_fmt(med([t.idle for t in traces])):>6} "
                  f"{_fmt(med([t.gap_median for t in traces])):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
