"""Run kmod 30's depmod and kmodd's depmod on the same fixture tree, and compare.

A scenario is a directory `<tmp>/root` with `lib/modules/<kver>/...` written by
tests/kobuild.py, and optionally a config directory passed with `-C`. Both tools run with
the same arguments (`-b <root>` and whatever the test adds); after each run the index
files it wrote are collected and removed, so the next run starts from the same tree.
The real depmod reads no host configuration here (Debian 12 ships no depmod.d), and kmodd
runs in-process with the host Root, exactly as a user would run it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from kmodd.cli.depmod import run as kmodd_depmod
from kmodd.system.root import Root
from tests.kobuild import KoSpec, write_ko

KVER = "4.4.4"
OUTPUTS = (
    "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin",
    "modules.softdep", "modules.symbols", "modules.symbols.bin", "modules.builtin.bin",
    "modules.builtin.alias.bin", "modules.devname", "modules.weakdep",
)
#: The real depmod must finish well within this; kmod 30 loops forever on some cycles.
KMOD_TIMEOUT = 5
REAL_DEPMOD = shutil.which("depmod") or "/sbin/depmod"


@dataclass
class Result:
    """One depmod run: exit status, both streams, and the index files it left."""

    rc: int
    stdout: bytes
    stderr: bytes
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def dep(self) -> str:
        return self.files["modules.dep"].decode()


@dataclass
class Tree:
    """A fixture module tree under `root`."""

    root: str
    kver: str = KVER

    @property
    def moddir(self) -> str:
        return f"{self.root}/lib/modules/{self.kver}"

    def module(self, relpath: str, spec: KoSpec) -> str:
        """Write a module at `<moddir>/<relpath>`; return its path."""
        path = f"{self.moddir}/{relpath}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return write_ko(path, spec)

    def external(self, directory: str, spec: KoSpec, name: str | None = None) -> str:
        os.makedirs(directory, exist_ok=True)
        return write_ko(f"{directory}/{name or spec.name.replace('_', '-')}.ko", spec)

    def write(self, relpath: str, data: bytes | str) -> str:
        path = f"{self.moddir}/{relpath}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path

    def order(self, *relpaths: str) -> None:
        self.write("modules.order", "".join(p + "\n" for p in relpaths))

    def collect(self, outdir: str | None = None) -> dict[str, bytes]:
        """Take the index files a run wrote (removing them)."""
        where = outdir or self.moddir
        files = {}
        for name in OUTPUTS:
            path = f"{where}/{name}"
            if os.path.exists(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
                os.unlink(path)
        leftovers = [n for n in os.listdir(where) if n.startswith("modules.") and
                     n.rsplit(".", 3)[0] in OUTPUTS]
        assert not leftovers, f"temporary files left behind: {leftovers}"
        return files

    def kmod(self, *args: str) -> Result:
        """Run the real kmod 30 depmod."""
        proc = subprocess.run(["depmod", *args], executable=REAL_DEPMOD, capture_output=True,
                              timeout=KMOD_TIMEOUT, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr, self.collect())

    def kmodd(self, *args: str, outdir: str | None = None, root: Root | None = None) -> Result:
        """Run kmodd's depmod in-process."""
        out, err = io.BytesIO(), io.BytesIO()
        rc = kmodd_depmod(["depmod", *args], root=root or Root(), stdout=out, stderr=err,
                          environ={})
        return Result(rc, out.getvalue(), err.getvalue(), self.collect(outdir))

    def both(self, *args: str) -> tuple[Result, Result]:
        """kmod then kmodd, same arguments (a `-b <root>` is added in front)."""
        full = ("-b", self.root, *args)
        return self.kmod(*full), self.kmodd(*full)


def simple(name: str, *, exports: tuple[str, ...] = (), needs: tuple[str, ...] = (),
           weak: tuple[str, ...] = (), modinfo: tuple[str, ...] = ("license=GPL",),
           crcs: dict[str, int] | None = None,
           versions: tuple[tuple[int, str], ...] = ()) -> KoSpec:
    """A module spec in one line."""
    return KoSpec(name, modinfo=list(modinfo), exports=list(exports), needs=list(needs),
                  weak_needs=list(weak), export_crcs=crcs or {}, versions=list(versions))
