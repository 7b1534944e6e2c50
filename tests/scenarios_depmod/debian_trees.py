"""Writable copies of the Debian kernel tree for depmod runs: plain, xz and zstd.

`depmod_tree(kind)` returns a basedir whose `lib/modules/<kver>` holds the modules (a symlink
to the cached tree for "plain", compressed copies for "xz" and "zstd", see COMPRESSORS),
the build's `modules.order`, `modules.builtin` and `modules.builtin.modinfo`, and the
index files the real kmod 30 `depmod` wrote for it. The
trees are built once per kernel under `$KMODD_TEST_CACHE/depmod-trees/<kver>` (about a
minute for xz) and reused; the real depmod is run again only when its output is missing.

Run as a script to build all three: `python3 -m tests.scenarios_depmod.debian_trees`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from tests.kerneltree import CACHE, debian_kernel_tree

TREES = os.path.join(CACHE, "depmod-trees")
#: The kernel build's compressor settings (scripts/Makefile.modinst, Linux 6.1), except
#: xz's preset: 1 instead of the default 6 makes the one-time build of the xz tree several
#: times faster in CI and gives the same kind of stream (xz, CRC32 check, LZMA2, 1 MiB
#: dictionary); kmod and kmodd then decompress the very same files.
COMPRESSORS = {
    "xz": ["xz", "--check=crc32", "--lzma2=preset=1,dict=1MiB"],
    "zstd": ["zstd", "-q", "--rm", "-f"],
}
BUILD_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
KINDS = ("plain", "xz", "zstd")


@dataclass(frozen=True)
class DepmodTree:
    kind: str
    basedir: str
    kver: str

    @property
    def moddir(self) -> str:
        return f"{self.basedir}/lib/modules/{self.kver}"


def depmod_tree(kind: str) -> DepmodTree:
    """The tree of this kind, built and depmod'ed by the real kmod once."""
    if kind not in KINDS:
        raise ValueError(f"unknown tree kind {kind!r}")
    source = debian_kernel_tree()
    # Keyed by the kernel too: a tree built for another kernel (the pin moved) is not reused.
    tree = DepmodTree(kind, os.path.join(TREES, source.kver, kind), source.kver)
    os.makedirs(TREES, exist_ok=True)
    with open(os.path.join(TREES, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = os.path.join(tree.basedir, ".complete")
        if not os.path.exists(done):
            _build(tree, source.moddir)
            with open(done, "w") as f:
                f.write(kind + "\n")
        if not os.path.exists(os.path.join(tree.moddir, "modules.dep.bin")):
            subprocess.run(["depmod", "-b", tree.basedir, tree.kver], check=True)
    return tree


def _build(tree: DepmodTree, source_moddir: str) -> None:
    shutil.rmtree(tree.basedir, ignore_errors=True)
    os.makedirs(tree.moddir)
    for name in BUILD_FILES:
        shutil.copy2(os.path.join(source_moddir, name), tree.moddir)
    kernel = os.path.join(tree.moddir, "kernel")
    if tree.kind == "plain":
        os.symlink(os.path.join(source_moddir, "kernel"), kernel)
        return
    shutil.copytree(os.path.join(source_moddir, "kernel"), kernel)
    files = subprocess.run(["find", kernel, "-name", "*.ko", "-print0"], check=True,
                           capture_output=True).stdout
    jobs = str(len(os.sched_getaffinity(0)))
    subprocess.run(["xargs", "-0", "-n", "32", "-P", jobs, *COMPRESSORS[tree.kind]],
                   input=files, check=True)


if __name__ == "__main__":
    for k in sys.argv[1:] or KINDS:
        t = depmod_tree(k)
        print(t.kind, t.moddir)
