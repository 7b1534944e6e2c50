"""Lookup speed: kmodd's snapshot against libkmod, side by side, on the differential corpus.

    python3 bench/bench_lookup.py [--rounds N]

One process, one corpus (tests/oracle/corpus.py: the Debian tree's own alias patterns turned
into 5000+ device modalias strings of every bus, plus module names, symbols and builtins for
the differential tests), every key resolved once per round by each side:

* libkmod through ctypes: `kmod_new` + `kmod_load_resources` once, then
  `kmod_module_new_from_lookup` + `kmod_module_unref_list` per key;
* kmodd: the snapshot (`ModuleIndex` + parsed config) built once, then a fresh `Resolver`
  per key (no module objects, no results carried between keys) and `Resolver.lookup`.

Both read the same module directory and the same (empty) configuration directory. Prints
median, mean and p99 per lookup for each side and the ratios: for the device modaliases (the
figure the targets are about), for every key of the corpus, and for the wildcard-heavy buses
on their own; and the snapshot's build time and memory.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import suppress

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from kmodd.core.kmod.resolve import ModuleLookupError, Resolver  # noqa: E402
from kmodd.system.moddb import load_config, snapshot_indexes  # noqa: E402
from kmodd.system.root import Root  # noqa: E402
from kmodd.system.sysview import FileView  # noqa: E402
from tests.kerneltree import debian_kernel_tree  # noqa: E402
from tests.oracle.corpus import build_corpus  # noqa: E402

WILDCARD_HEAVY = ("of", "pcmcia", "hid", "acpi*", "dmi*")
#: Corpus entries that are not device modaliases: module names, symbols, builtins.
NOT_MODALIAS = ("-", "builtin", "symbol")


class LibKmod:
    """The anchor: libkmod.so.2 through ctypes."""

    def __init__(self, moddir: str, confdir: str) -> None:
        lk = ctypes.CDLL("libkmod.so.2")
        lk.kmod_new.restype = ctypes.c_void_p
        lk.kmod_new.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
        lk.kmod_load_resources.argtypes = [ctypes.c_void_p]
        lk.kmod_module_new_from_lookup.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lk.kmod_module_unref_list.argtypes = [ctypes.c_void_p]
        paths = (ctypes.c_char_p * 2)(confdir.encode(), None)
        self.lk = lk
        self.ctx = lk.kmod_new(moddir.encode(), paths)
        if lk.kmod_load_resources(self.ctx) != 0:
            raise SystemExit("kmod_load_resources failed")
        self.out = ctypes.c_void_p()

    def lookup(self, key: bytes) -> None:
        self.out.value = None
        self.lk.kmod_module_new_from_lookup(self.ctx, key, ctypes.byref(self.out))
        self.lk.kmod_module_unref_list(self.out)


RSS_PROBE = """
import gc, resource, sys, tempfile
sys.path.insert(0, {repo!r})
from kmodd.system.moddb import load_config, snapshot_indexes
from kmodd.system.root import Root
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = rss()
index, _ = snapshot_indexes({moddir!r})
config = load_config(Root(tempfile.mkdtemp()), {moddir!r}, [tempfile.mkdtemp()])
gc.collect()
print(rss() - before)
"""


def snapshot_rss(moddir: str) -> int:
    """Resident memory the snapshot adds to a fresh process (imports already done)."""
    repo = os.path.dirname(HERE)
    code = RSS_PROBE.format(repo=repo, moddir=moddir)
    # Import kmodd first so the figure is the snapshot's, not the interpreter's or the code's.
    code = "import kmodd.system.moddb, kmodd.core.kmod.aliasindex\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip())


def stats(samples: list[float]) -> tuple[float, float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e6, statistics.fmean(s) * 1e6, s[int(len(s) * 0.99)] * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    tree = debian_kernel_tree()
    corpus = build_corpus(tree.moddir)
    keys = [e.text for e in corpus]
    buses = [e.bus for e in corpus]
    confdir = tempfile.mkdtemp(prefix="kmodd-bench-conf.")
    root = Root(tempfile.mkdtemp(prefix="kmodd-bench-root."))  # no cmdline, no /sys/module

    builds = []
    for _ in range(5):
        gc.collect()
        t0 = time.perf_counter()
        snapshot_indexes(tree.moddir)
        load_config(root, tree.moddir, [confdir])
        builds.append(time.perf_counter() - t0)
    build = statistics.median(builds)
    gc.collect()
    tracemalloc.start()
    index, problems = snapshot_indexes(tree.moddir)
    config = load_config(root, tree.moddir, [confdir])
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert not problems, problems
    gc.freeze()
    sysview = FileView(root)
    lib = LibKmod(tree.moddir, confdir)
    encoded = [k.encode("latin-1") for k in keys]

    lib_t: list[float] = []
    kd_t: list[float] = []
    clock = time.perf_counter
    for _ in range(args.rounds):
        for raw in encoded:
            t = clock()
            lib.lookup(raw)
            lib_t.append(clock() - t)
        for k in keys:
            t = clock()
            with suppress(ModuleLookupError):  # an invalid alias: libkmod returns -EINVAL too
                Resolver(index, config, sysview).lookup(k)
            kd_t.append(clock() - t)

    def line(label: str, lt: list[float], kt: list[float]) -> None:
        lm, la, lp = stats(lt)
        km, ka, kp = stats(kt)
        print(f"{label:<22} libkmod median {lm:7.1f} mean {la:7.1f} p99 {lp:8.1f} us | "
              f"kmodd median {km:7.1f} mean {ka:7.1f} p99 {kp:8.1f} us | "
              f"ratio median {km / lm:.2f} mean {ka / la:.2f}")

    n = len(keys)
    print(f"corpus: {n} keys, {args.rounds} rounds, module dir {tree.moddir}")
    rss = snapshot_rss(tree.moddir)
    print(f"snapshot build: {build * 1e3:.1f} ms (median of 5), {mem / 2**20:.1f} MiB allocated,"
          f" {rss / 2**20:.1f} MiB resident")
    def subset(label: str, keep: list[int]) -> None:
        idx = [r * n + i for r in range(args.rounds) for i in keep]
        line(label, [lib_t[i] for i in idx], [kd_t[i] for i in idx])

    devices = [i for i, b in enumerate(buses) if b not in NOT_MODALIAS]
    subset(f"device modaliases ({len(devices)})", devices)
    line(f"every key ({n})", lib_t, kd_t)
    subset("of/pcmcia/hid/acpi/dmi", [i for i, b in enumerate(buses) if b in WILDCARD_HEAVY])
    return 0


if __name__ == "__main__":
    sys.exit(main())
