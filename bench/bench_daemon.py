#!/usr/bin/env python3
"""The daemon's speed and size: kmodd next to libkmod (udev's `kmod load` path), in one run.

    python3 bench/bench_daemon.py [--runs N] [--burst N]      (as root)

1. start-up: `kmodd` started as the unit starts it (a fresh interpreter, `--dry-run` so that
   nothing is loaded), over a root whose /lib/modules/`uname -r` is the full Debian 6.1
   tree (4023 modules) and whose /sys and /proc are the machine's. Timed from spawn to
   READY=1 on $NOTIFY_SOCKET, and to the STATUS that says coldplug is done; resident memory
   (VmRSS) at READY and once the index is in its final form (decoded after the coldplug
   burst, or left mapped), and the peak (VmHWM). Both index modes: decoded in memory
   (the default) and left mapped. Anchor: a fresh interpreter that makes a libkmod context
   (`kmod_new` + `kmod_load_resources`, through ctypes), and the bare interpreter.
2. per uevent: datagrams built from real modaliases (this machine's devices and the rich
   QEMU guest's, tests/data/qemu/modaliases-rich.txt), each parsed (`parse_uevent`),
   resolved and planned (`core.autoload.decide.decide`: lookup, initstate, `plan_probe` with udev's
   flags) on the decoded snapshot, as the daemon's dispatcher does. "cold": every modalias
   once on a fresh snapshot (repeated modaliases in the corpus reuse their plans, as in the
   daemon); "mapped": the same on an index left mapped (`index_in_memory = no`); "burst":
   N events cycling through them (plans remembered per snapshot, as in the daemon).
   Anchor: libkmod doing udev's work for the same modaliases (`kmod_module_new_from_lookup`,
   `kmod_module_get_initstate`, `kmod_module_probe_insert_module(DRY_RUN | APPLY_BLACKLIST)`),
   a fresh context per cold pass. p50 and p99 per event, events/s, ratios.
3. the daemon's own queue: the burst pushed through a running in-process daemon (a fake
   uevent source, dry run): events/s from the first event queued to the last one decided,
   and the queue-to-decision latency.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from kmodd.core.autoload.uevent import Action, Uevent, format_uevent, parse_uevent  # noqa: E402
from kmodd.daemon.devices import Decisions  # noqa: E402
from kmodd.daemon.snapshot import Snapshot, build_snapshot  # noqa: E402
from kmodd.system.liveview import ListedModules  # noqa: E402
from kmodd.system.modstate import SysModules  # noqa: E402
from kmodd.system.root import Root  # noqa: E402
from kmodd.system.sysfs import scan_devices  # noqa: E402
from tests.kerneltree import debian_kernel_tree  # noqa: E402

RICH = REPO / "tests/data/qemu/modaliases-rich.txt"
KMOD_PROBE_DRY_RUN = 0x10
KMOD_PROBE_APPLY_BLACKLIST = 0x20000


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(int(len(s) * q), len(s) - 1)]


def rss(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


# -- 1. start-up ------------------------------------------------------------------------------

#: Roots made by this run, removed at its end (rmtree unlinks their symlinks, never follows).
ROOTS: list[Path] = []


def bench_root(moddir: str, machine: bool = True) -> Path:
    """A root whose module directory (for `uname -r`) is the Debian tree; with `machine`,
    its /sys and /proc are this machine's, else empty (for the simulated kernel)."""
    base = Path(tempfile.mkdtemp(prefix="kmodd-bench-daemon."))
    ROOTS.append(base)
    (base / "lib/modules").mkdir(parents=True)
    (base / "lib/modules" / os.uname().release).symlink_to(moddir)
    (base / "etc/modprobe.d").mkdir(parents=True)
    if machine:
        (base / "sys").symlink_to("/sys")
        (base / "proc").symlink_to("/proc")
    else:
        (base / "proc").mkdir()
        (base / "proc/cmdline").write_text("\n")
    return base


def start_once(base: Path, in_memory: bool) -> dict[str, float]:
    notify = base / "notify"
    notify.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(60)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify)}
    argv = [sys.executable, "-m", "kmodd.daemon.launch", f"--root={base}", "--dry-run",
            "--log-target=stderr", "--log-level=err", "--no-watch-config",
            f"--index-in-memory={'yes' if in_memory else 'no'}"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, cwd=REPO)
    out: dict[str, float] = {}
    try:
        while "ready" not in out or "rss_coldplug" not in out:
            text = sock.recv(65536).decode()
            now = time.monotonic()
            if "READY=1" in text and "ready" not in out:
                out["ready"] = (now - started) * 1000
                out["rss_ready"] = rss(proc.pid)["VmRSS"] / 1024
            if "coldplug done" in text and "coldplug" not in out:
                out["coldplug"] = (now - started) * 1000
            # Memory once the index is in its final form (decoded after the coldplug burst).
            if "coldplug done" in text and (not in_memory or "(decoded)" in text):
                memory = rss(proc.pid)
                out["rss_coldplug"] = memory["VmRSS"] / 1024
                out["hwm"] = memory["VmHWM"] / 1024
    finally:
        proc.terminate()
        proc.wait(30)
        sock.close()
    return out


LIBKMOD_START = """
import ctypes, sys, time
lk = ctypes.CDLL("libkmod.so.2")
lk.kmod_new.restype = ctypes.c_void_p
lk.kmod_new.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
lk.kmod_load_resources.argtypes = [ctypes.c_void_p]
ctx = lk.kmod_new(sys.argv[1].encode(), None)
assert lk.kmod_load_resources(ctx) == 0
print(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
"""


def timed_process(argv: list[str]) -> tuple[float, float]:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return (time.monotonic() - started) * 1000, int(result.stdout.split()[0]) / 1024


def bench_startup(moddir: str, runs: int) -> None:
    base = bench_root(moddir)
    print(f"1. start-up ({runs} runs, medians; full Debian index, {os.uname().release} -> "
          f"{moddir})")
    for in_memory in (True, False):
        rows = [start_once(base, in_memory) for _ in range(runs)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        label = "decoded in memory" if in_memory else "mapped files only"
        print(f"   kmodd ({label:<17}) READY {med['ready']:6.0f} ms  RSS {med['rss_ready']:5.1f} "
              f"MiB | coldplug done {med['coldplug']:6.0f} ms | then RSS "
              f"{med['rss_coldplug']:5.1f} MiB  peak {med['hwm']:5.1f} MiB")
    lib = [timed_process([sys.executable, "-S", "-c", LIBKMOD_START, moddir])
           for _ in range(runs)]
    bare = [timed_process([sys.executable, "-c",
                           "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"])
            for _ in range(runs)]
    print(f"   anchor: python -S + libkmod context + load_resources "
          f"{statistics.median(t for t, _ in lib):6.0f} ms  RSS "
          f"{statistics.median(m for _, m in lib):5.1f} MiB")
    print(f"   (bare interpreter with site: {statistics.median(t for t, _ in bare):4.0f} ms, "
          f"{statistics.median(m for _, m in bare):4.1f} MiB)")


# -- 2. per uevent -------------------------------------------------------------------------------

def corpus() -> list[tuple[str, str, str]]:
    """(devpath, subsystem, modalias): this machine's devices, then the rich guest's."""
    out = [(d.devpath, d.subsystem or "none", d.modalias) for d in scan_devices(Root()).devices]
    for line in RICH.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, devpath, modalias = line.split("\t")
        out.append((f"/guest{devpath}", modalias.split(":", 1)[0], modalias))
    return out


def datagrams(items: list[tuple[str, str, str]]) -> list[bytes]:
    out = []
    for seq, (devpath, subsystem, modalias) in enumerate(items, 1):
        env = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": subsystem,
               "MODALIAS": modalias, "SEQNUM": str(seq)}
        out.append(format_uevent(Uevent(Action.ADD, devpath, subsystem, seq, env)))
    return out


class LibKmod:
    """udev's `kmod load` through libkmod.so.2 (dry run): the anchor."""

    def __init__(self, moddir: str, confdir: str) -> None:
        lk = ctypes.CDLL("libkmod.so.2")
        lk.kmod_new.restype = ctypes.c_void_p
        lk.kmod_new.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
        lk.kmod_load_resources.argtypes = [ctypes.c_void_p]
        lk.kmod_unref.argtypes = [ctypes.c_void_p]
        lk.kmod_module_new_from_lookup.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                   ctypes.POINTER(ctypes.c_void_p)]
        lk.kmod_module_unref_list.argtypes = [ctypes.c_void_p]
        lk.kmod_list_next.restype = ctypes.c_void_p
        lk.kmod_list_next.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lk.kmod_module_get_module.restype = ctypes.c_void_p
        lk.kmod_module_get_module.argtypes = [ctypes.c_void_p]
        lk.kmod_module_unref.argtypes = [ctypes.c_void_p]
        lk.kmod_module_get_initstate.argtypes = [ctypes.c_void_p]
        lk.kmod_module_probe_insert_module.argtypes = [
            ctypes.c_void_p, ctypes.c_uint, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_void_p]
        self.lk = lk
        self.moddir = moddir.encode()
        self.paths = (ctypes.c_char_p * 2)(confdir.encode(), None)
        self.ctx: int | None = None
        self.fresh()

    def fresh(self) -> None:
        if self.ctx is not None:
            self.lk.kmod_unref(self.ctx)
        self.ctx = self.lk.kmod_new(self.moddir, self.paths)
        assert self.lk.kmod_load_resources(self.ctx) == 0

    def load(self, modalias: bytes) -> None:
        lk = self.lk
        head = ctypes.c_void_p()
        if lk.kmod_module_new_from_lookup(self.ctx, modalias, ctypes.byref(head)) < 0:
            return
        item = head.value
        while item:
            mod = lk.kmod_module_get_module(item)
            lk.kmod_module_get_initstate(mod)
            lk.kmod_module_probe_insert_module(
                mod, KMOD_PROBE_DRY_RUN | KMOD_PROBE_APPLY_BLACKLIST, None, None, None, None)
            lk.kmod_module_unref(mod)
            item = lk.kmod_list_next(head.value, item)
        lk.kmod_module_unref_list(head.value)


def kmodd_event(snapshot: Snapshot, decisions: Decisions, data: bytes) -> None:
    """What the dispatcher does for an `add` with a MODALIAS (Devices._decide's core)."""
    event = parse_uevent(data)
    assert isinstance(event, Uevent) and event.modalias is not None
    decisions.resolve(snapshot, (event.modalias,))


def bench_events(moddir: str, burst: int) -> list[bytes]:
    base = bench_root(moddir)
    root = Root(str(base))
    kver = os.uname().release
    shown = f"/lib/modules/{kver}"
    # This machine has loaded nothing (no module support): what the daemon's decisions see.
    live = ListedModules(SysModules(Root()))
    decisions = Decisions(live)
    items = corpus()
    cold_data = datagrams(items)
    burst_data = [cold_data[i % len(cold_data)] for i in range(burst)]
    modaliases = [m.encode("latin-1") for _, _, m in items]
    burst_aliases = [modaliases[i % len(modaliases)] for i in range(burst)]
    lib = LibKmod(moddir, str(base / "etc/modprobe.d"))
    clock = time.perf_counter

    def snapshot(decode: bool = True) -> Snapshot:
        built = build_snapshot(root, shown, str(base / shown.lstrip("/")), 1, decode=decode)
        assert isinstance(built, Snapshot), built
        return built

    # Cold: each pass on a fresh snapshot (kmodd) or a fresh context (libkmod).
    kd_cold: list[float] = []
    lk_cold: list[float] = []
    for _ in range(3):
        # A fresh snapshot and memo; the previous ones are freed here, not in the first event.
        snap = decisions = None  # type: ignore[assignment]
        snap, decisions = snapshot(), Decisions(live)
        for data in cold_data:
            t = clock()
            kmodd_event(snap, decisions, data)
            kd_cold.append(clock() - t)
        lib.fresh()
        for alias in modaliases:
            t = clock()
            lib.load(alias)
            lk_cold.append(clock() - t)
    # Cold on the mapped files (index_in_memory = no).
    kd_mapped: list[float] = []
    snap = decisions = None  # type: ignore[assignment]
    snap, decisions = snapshot(decode=False), Decisions(live)
    for data in cold_data:
        t = clock()
        kmodd_event(snap, decisions, data)
        kd_mapped.append(clock() - t)
    # Burst: warm.
    snap = decisions = None  # type: ignore[assignment]
    snap, decisions = snapshot(), Decisions(live)
    for data in cold_data:
        kmodd_event(snap, decisions, data)
    kd_burst: list[float] = []
    started = clock()
    for data in burst_data:
        t = clock()
        kmodd_event(snap, decisions, data)
        kd_burst.append(clock() - t)
    kd_total = clock() - started
    lk_burst: list[float] = []
    started = clock()
    for alias in burst_aliases:
        t = clock()
        lib.load(alias)
        lk_burst.append(clock() - t)
    lk_total = clock() - started

    print(f"2. per uevent: {len(items)} real modaliases (the devices of this machine and of "
          f"the rich QEMU guest); cold: 3 passes, burst: {burst} events")

    def line(label: str, kd: list[float], lk: list[float], kd_rate: float | None = None,
             lk_rate: float | None = None) -> None:
        kp50, kp99 = percentile(kd, 0.5) * 1e6, percentile(kd, 0.99) * 1e6
        lp50, lp99 = percentile(lk, 0.5) * 1e6, percentile(lk, 0.99) * 1e6
        kr = kd_rate if kd_rate is not None else len(kd) / sum(kd)
        lr = lk_rate if lk_rate is not None else len(lk) / sum(lk)
        print(f"   {label:<6} kmodd p50 {kp50:7.1f} us p99 {kp99:8.1f} us {kr:9,.0f} ev/s | "
              f"libkmod p50 {lp50:7.1f} us p99 {lp99:8.1f} us {lr:9,.0f} ev/s | "
              f"kmodd/libkmod time: p50 {kp50 / lp50:5.2f}x  mean {lr / kr:5.2f}x")

    line("cold", kd_cold, lk_cold)
    line("mapped", kd_mapped, lk_cold)
    line("burst", kd_burst, lk_burst, burst / kd_total, burst / lk_total)
    print("   (kmodd: parse + lookup + initstate + plan; libkmod: lookup + initstate + "
          "dry-run probe, no parse; mapped: kmodd with index_in_memory = no, one cold pass)")
    return cold_data


# -- 3. through the daemon's queue ---------------------------------------------------------------

def bench_daemon_queue(moddir: str, burst: int, cold_data: list[bytes]) -> None:
    from tests.daemon.daemon_tree import RunningDaemon, wait_until
    from tests.fakes import FakeKernel, FakeUeventSource

    base = bench_root(moddir, machine=False)
    root = Root(str(base))
    events = []
    for i in range(burst):
        parsed = parse_uevent(cold_data[i % len(cold_data)])
        assert isinstance(parsed, Uevent)
        devpath = f"/devices/bench/{i}"
        env = dict(parsed.env, DEVPATH=devpath)
        events.append(Uevent(parsed.action, devpath, parsed.subsystem, i + 1, env))

    async def scenario() -> tuple[float, list[float]]:
        source = FakeUeventSource()
        running = RunningDaemon(root, kernel=FakeKernel(root), source=source,
                                kver=os.uname().release, dry_run=True, log_level="err",
                                intake_queue=burst, static_rules=True)
        async with running as daemon:
            await asyncio.wait_for(daemon.coldplugged.wait(), 60)  # decoded index in place
            assert daemon.devices is not None
            records = daemon.devices.table.devices
            started = time.monotonic()
            source.push(*events)
            await wait_until(lambda: len(records) >= burst, timeout=600)
            decided = max(r.started for r in records.values())
            latencies = [r.started - r.queued for r in records.values()]
            await wait_until(lambda: daemon.loader is not None and daemon.loader.busy == 0,
                             timeout=600)
            return burst / (decided - started), latencies

    rate, latencies = asyncio.run(scenario())
    p50, p99 = percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3
    print(f"3. the daemon's queue: {burst} uevents pushed at once into a running daemon "
          f"(dry run): {rate:,.0f} ev/s queued-to-decided; queue latency p50 {p50:.1f} ms "
          f"p99 {p99:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=20_000)
    args = ap.parse_args()
    tree = debian_kernel_tree()
    print(f"load average {os.getloadavg()[0]:.2f} at the start, {os.cpu_count()} CPUs")
    try:
        bench_startup(tree.moddir, args.runs)
        cold = bench_events(tree.moddir, args.burst)
        bench_daemon_queue(tree.moddir, args.burst, cold)
    finally:
        for root in ROOTS:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
