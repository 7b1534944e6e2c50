"""One-shot `modprobe -R ALIAS`: kmodd's command against bare Python and kmod's modprobe.

    python3 bench/bench_oneshot.py [--runs N]

A one-shot lookup is what the kernel's request_module() and scripts run. kmodd cannot start
faster than its interpreter, so the target is relative to `python3 -c pass` measured in the
same run: at most 1.5x. The three commands run interleaved, N times each, on the Debian
tree; medians of wall time are printed with the ratios. kmodd's bytecode is compiled first
(`compileall`), as a package installation does.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.kerneltree import debian_kernel_tree  # noqa: E402

ALIASES = (
    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
    "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00",
    "of:NuartTserialCfsl,imx21-uartCfsl,imx-uart",
)


def kmodctl() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "kmodctl")
    if not os.access(beside, os.X_OK):
        raise SystemExit("kmodctl is not installed next to this Python (pip install -e .)")
    return beside


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    import kmodd

    compileall.compile_dir(os.path.dirname(kmodd.__file__), quiet=1)
    tree = debian_kernel_tree()
    base = ["-d", tree.root, "-S", tree.kver, "-R"]
    for alias in ALIASES:
        cmds = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            "kmodctl modprobe -R": [kmodctl(), "modprobe", *base, alias],
            "kmod modprobe -R": ["modprobe", *base, alias],
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for name, argv in cmds.items():
                times[name].append(timed(argv))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{alias[:48]:<48} python {med['python3 -c pass']:6.1f} ms | "
              f"kmodd {med['kmodctl modprobe -R']:6.1f} ms | kmod {med['kmod modprobe -R']:5.1f} ms"
              f" | kmodd/python {med['kmodctl modprobe -R'] / med['python3 -c pass']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
