"""modinfo on the whole Debian kernel: kmodd against kmod 30, side by side, in one run.

    python3 bench/modinfo_bench.py [--repeat N] [--sample N]

Prints wall-clock medians and kmodd/kmod ratios for:
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
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kmodd.cli import modinfo  # noqa: E402
from kmodd.core import signature  # noqa: E402
from kmodd.system.root import Root  # noqa: E402
from tests.kerneltree import debian_kernel_tree  # noqa: E402

KMODD = [sys.executable, "-m", "kmodd.cli.kmodctl", "modinfo"]
REAL = ["modinfo"]


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})


def row(label: str, ours: float, theirs: float) -> None:
    print(f"{label:<44} kmodd {ours:8.3f} s   kmod {theirs:8.3f} s   ratio {ours / theirs:5.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    tree = debian_kernel_tree()
    paths = sorted(glob.glob(f"{tree.moddir}/kernel/**/*.ko", recursive=True))
    print(f"{len(paths)} modules of {tree.package}; medians of {args.repeat} runs")
    run(REAL + paths)  # warm the page cache for both
    for options in ([], ["-F", "signer"]):
        label = "one process, all modules" + (f" ({' '.join(options)})" if options else "")
        row(label, timed(lambda o=options: run(KMODD + o + paths), args.repeat),
            timed(lambda o=options: run(REAL + o + paths), args.repeat))
    sample = paths[:: max(1, len(paths) // args.sample)][: args.sample]
    row(f"one process per module ({len(sample)} modules)",
        timed(lambda: [run(KMODD + [p]) for p in sample], 1),
        timed(lambda: [run(REAL + [p]) for p in sample], 1))

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
        seconds = timed(lambda c=cold: parse_all(c), args.repeat)
        print(f"signature reader ({'cold' if cold else 'warm'}): "
              f"{len(images) / seconds:10.0f} signatures/s ({seconds * 1e6 / len(images):.1f} "
              "us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
