"""Benchmark: kmodd's depmod against kmod 30's depmod on the Debian kernel tree, same run.

For each tree (plain .ko, .ko.xz, .ko.zst; see tests/scenarios_depmod/debian_trees.py) it
alternates runs of the real `depmod -b TREE KVER` and `kmodctl depmod -b TREE -o OUT KVER`
(a fresh Python process each time, so interpreter start-up counts), checks once that both
wrote the same files, and prints the median wall and CPU times and kmodd/kmod ratios.

`--elf` also compares ways to read every module's symbols in one process: kmodd's bulk
reader (kmodd/core/modfile/elf.py) against pyelftools.

    python3 bench/bench_depmod.py [--runs 5] [--trees plain,xz,zstd] [--elf]
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.scenarios_depmod.debian_trees import KINDS, depmod_tree  # noqa: E402

OUTPUTS = (
    "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin",
    "modules.softdep", "modules.symbols", "modules.symbols.bin", "modules.builtin.bin",
    "modules.builtin.alias.bin", "modules.devname",
)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU (user+sys of the child and its children) seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def bench_tree(kind: str, runs: int) -> dict[str, float]:
    tree = depmod_tree(kind)
    env = dict(os.environ, PYTHONPATH=REPO)
    kmod_cmd = ["depmod", "-b", tree.basedir, tree.kver]
    with tempfile.TemporaryDirectory(prefix="bench-depmod-") as out:
        kmodd_cmd = [sys.executable, "-m", "kmodd.cli.kmodctl", "depmod", "-b", tree.basedir,
                     "-o", out, tree.kver]
        timed(kmod_cmd)  # warm the page cache for both
        timed(kmodd_cmd, env)
        kmod_wall: list[float] = []
        kmod_cpu: list[float] = []
        kmodd_wall: list[float] = []
        kmodd_cpu: list[float] = []
        for i in range(runs):
            order = [(kmod_cmd, None, kmod_wall, kmod_cpu), (kmodd_cmd, env, kmodd_wall,
                                                             kmodd_cpu)]
            for cmd, cmd_env, walls, cpus in (order if i % 2 == 0 else order[::-1]):
                wall, cpu = timed(cmd, cmd_env)
                walls.append(wall)
                cpus.append(cpu)
        outdir = f"{out}/lib/modules/{tree.kver}"
        same = all(filecmp.cmp(f"{tree.moddir}/{n}", f"{outdir}/{n}", shallow=False)
                   for n in OUTPUTS)
    result = {
        "kmod_wall": statistics.median(kmod_wall), "kmodd_wall": statistics.median(kmodd_wall),
        "kmod_cpu": statistics.median(kmod_cpu), "kmodd_cpu": statistics.median(kmodd_cpu),
        "identical": float(same),
    }
    return result


def bench_elf_readers() -> None:
    """Read exports, needed symbols and modinfo of every plain module, two ways."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    from kmodd.core.modfile.elf import ElfError, parse_module

    tree = depmod_tree("plain")
    paths: list[str] = []
    for d, _, files in os.walk(f"{tree.moddir}/kernel"):
        paths.extend(os.path.join(d, f) for f in files if f.endswith(".ko"))
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())

    def with_kmodd() -> int:
        total = 0
        for p, data in zip(paths, blobs, strict=True):
            elf = parse_module(data, p)
            with contextlib.suppress(ElfError):  # no exports at all
                total += len(elf.export_pairs())
            total += len(elf.needed_triples()) + len(elf.strings(".modinfo"))
        return total

    def with_pyelftools() -> int:
        import io
        total = 0
        for data in blobs:
            elf = ELFFile(io.BytesIO(data))
            symtab = elf.get_section_by_name(".symtab")
            assert isinstance(symtab, SymbolTableSection)
            crcs = [s.name for s in symtab.iter_symbols() if s.name.startswith("__crc_")]
            undefined = [s.name for s in symtab.iter_symbols()
                         if s["st_shndx"] == "SHN_UNDEF" and s.name]
            modinfo = elf.get_section_by_name(".modinfo")
            strings = [s for s in modinfo.data().split(b"\0") if s] if modinfo else []
            total += len(crcs) + len(undefined) + len(strings)
        return total

    for name, fn in (("kmodd elf.py (bulk)", with_kmodd), ("pyelftools", with_pyelftools)):
        start = time.perf_counter()
        cpu0 = time.process_time()
        count = fn()
        print(f"  {name:22s} {time.perf_counter() - start:7.2f} s wall "
              f"{time.process_time() - cpu0:7.2f} s cpu  ({count} items, {len(paths)} modules)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trees", default=",".join(KINDS))
    parser.add_argument("--elf", action="store_true", help="also compare ELF readers")
    args = parser.parse_args()
    print(f"depmod on the Debian tree, {args.runs} runs each, medians "
          f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")
    print(f"{'tree':6s} {'kmod wall':>10s} {'kmodd wall':>11s} {'ratio':>6s} "
          f"{'kmod cpu':>9s} {'kmodd cpu':>10s}  identical")
    for kind in args.trees.split(","):
        r = bench_tree(kind, args.runs)
        print(f"{kind:6s} {r['kmod_wall']:9.2f}s {r['kmodd_wall']:10.2f}s "
              f"{r['kmodd_wall'] / r['kmod_wall']:5.2f}x {r['kmod_cpu']:8.2f}s "
              f"{r['kmodd_cpu']:9.2f}s  {'yes' if r['identical'] else 'NO'}")
    if args.elf:
        print("reading every module's symbols and modinfo, one process:")
        bench_elf_readers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
