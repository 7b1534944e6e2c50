"""modinfo on the whole Debian kernel: kmodd against kmod 30, side by side, in one run.

    python3 bench/modinfo_bench.py [--repeat N] [--sample N]

Prints wall-clock medians (and CPU seconds, steadier on a busy machine) and kmodd/kmod
ratios for:
  * one process over all 4023 modules (`modinfo PATH...`, and `-F signer`);
  * one process per module for a sample (what scripts calling modinfo in a loop pay);
  * kmodd in-process (no interpreter start-up);
  * the signature reader alone (modules/second), cold (no remembered layout) and warm.
Needs the Debian kernel tree (tests/kerneltree.py) and the installed kmod.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kmodd.cli import modinfo
from kmodd.core.modfile import signature
from kmodd.system.root import Root
from tests.kerneltree import debian_kernel_tree

KMODD = [sys.executable, "-m", "kmodd.cli.kmodctl", "modinfo"]
REAL = ["modinfo"]


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall-clock seconds of `fn`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU seconds (user + system) `fn` spends, in this process and its children."""
    def used() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    times = []
    for _ in range(repeat):
        start = used()
        fn()
        times.append(used() - start)
    return statistics.median(times)


#: kmodd runs as an installed package would: with its bytecode cached (compiled below), even
#: where the environment sets PYTHONDONTWRITEBYTECODE.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPATH"] = os.getcwd()


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=ENV)


def run_each(argvs: list[list[str]]) -> None:
    for argv in argvs:
        run(argv)


def row(label: str, ours: float, theirs: float, unit: str = "s") -> None:
    print(f"{label:<50} kmodd {ours:8.3f} {unit}  kmod {theirs:8.3f} {unit}  "
          f"ratio {ours / theirs:5.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    tree = debian_kernel_tree()
    paths = sorted(glob.glob(f"{tree.moddir}/kernel/**/*.ko", recursive=True))
    print(f"{len(paths)} modules of {tree.package}; medians of {args.repeat} runs")
    subprocess.run([sys.executable, "-m", "compileall", "-q", "kmodd"], check=True, env=ENV)
    run(REAL + paths)  # warm the page cache for both
    for options in ([], ["-F", "signer"]):
        label = "one process, all modules" + (f" ({' '.join(options)})" if options else "")
        row(label, timed(partial(run, KMODD + options + paths), args.repeat),
            timed(partial(run, REAL + options + paths), args.repeat))
        row(label + ", CPU", cpu(partial(run, KMODD + options + paths), args.repeat),
            cpu(partial(run, REAL + options + paths), args.repeat), "cpu-s")
    sample = paths[:: max(1, len(paths) // args.sample)][: args.sample]
    row(f"one process per module ({len(sample)} modules)",
        timed(partial(run_each, [[*KMODD, p] for p in sample]), 1),
        timed(partial(run_each, [[*REAL, p] for p in sample]), 1))
    row(f"one process per module ({len(sample)} modules), CPU",
        cpu(partial(run_each, [[*KMODD, p] for p in sample]), 1),
        cpu(partial(run_each, [[*REAL, p] for p in sample]), 1), "cpu-s")
    row(f"  of which bare interpreter start-up ({len(sample)}x)",
        cpu(partial(run_each, [[sys.executable, "-c", "pass"] for _ in sample]), 1),
        cpu(partial(run_each, [[*REAL, p] for p in sample]), 1), "cpu-s")

    def in_process() -> None:
        modinfo.run(["modinfo", *paths], root=Root(), stdout=io.BytesIO(),
                    stderr=io.BytesIO(), environ={})

    row("kmodd in-process vs kmod process, all", timed(in_process, args.repeat),
        timed(lambda: run(REAL + paths), args.repeat))

    images = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        images.append(data[-4096:])  # the signature sits at the end
    def parse_all(cold: bool) -> None:
        for image in images:
            if cold:
                signature._templates.clear()
            signature.parse_module_signature(image)
    for cold in (True, False):
        seconds = timed(partial(parse_all, cold), args.repeat)
        print(f"signature reader ({'cold' if cold else 'warm'}): "
              f"{len(images) / seconds:10.0f} signatures/s ({seconds * 1e6 / len(images):.1f} "
              "us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
