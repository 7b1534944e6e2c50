"""kmodd's kernel edge on a real kernel: a script for the QEMU guest (root, Debian 6.1 kernel).

Run in the guest as `python3 guest_checks.py [--moddir DIR]`; it prints one JSON report and
exits 0 when every check passed. What it does, with fat, vfat, msdos and loop (nothing loads
them on its own in the test guest):

1. vfat before fat: insmod fails with "Unknown symbol in module" and the kernel's own lines
   `vfat: Unknown symbol fat_dir_empty (err -2)` and the like are caught from /dev/kmsg
   during the attempt;
2. fat, then vfat, load (finit_module); a second fat is "File exists";
3. lsmod shows vfat holding fat; rmmod fat says "in use by: vfat"; rmmod -f fat gets
   EWOULDBLOCK from the kernel; rmmod vfat then fat remove them;
4. an unknown parameter loads with the kernel's warning, a bad value is EINVAL with the
   kernel's line;
5. last (it taints the kernel): insmod -f msdos ignores modversions and vermagic.

With `--test-modules DIR` (tests/modules built for the guest's kernel) it first also checks
an unknown symbol between two modules of our own, parameters in sysfs, holders, and an init
function that fails with ENODEV (its own kmsg line says so).

Every kmodd message is compared byte for byte with the real kmod tool's on the same step
(`--no-real` skips that, which is how the host test runs the script on the simulated kernel).
The kmodd side runs in-process through the front ends' `run()`, the real side as processes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kmodd.cli import insmod, lsmod, rmmod
from kmodd.core.autoload.kmsg import KmsgRecord, module_lines
from kmodd.core.kmod.initstate import InitState
from kmodd.system.kmsg import DevKmsg
from kmodd.system.modstate import SysModules
from kmodd.system.root import Root

TOOLS = {"insmod": insmod, "rmmod": rmmod, "lsmod": lsmod}


@dataclass
class Check:
    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ran:
    rc: int
    out: str
    err: str


class Session:
    """Runs kmodd's front ends (and optionally the real tools) and records the checks."""

    def __init__(self, root: Root, moddir: str, *, kernel: Any = None,
                 compare_real: bool = True) -> None:
        self.root = root
        self.moddir = moddir
        self.kernel = kernel  # a KernelPort, or None for the real kernel
        self.compare_real = compare_real
        self.checks: list[Check] = []
        self.kmsg = DevKmsg(root)

    def path(self, name: str) -> str:
        sub = {"loop": "drivers/block"}.get(name, "fs/fat")
        return f"{self.moddir}/kernel/{sub}/{name}.ko"

    def kmodd(self, argv: Sequence[str]) -> Ran:
        out, err = io.BytesIO(), io.BytesIO()
        extra = {} if argv[0] == "lsmod" or self.kernel is None else {"kernel": self.kernel}
        rc = TOOLS[argv[0]].run(list(argv), root=self.root, stdout=out, stderr=err,
                                environ=dict(os.environ), **extra)
        return Ran(rc, out.getvalue().decode("latin-1"), err.getvalue().decode("latin-1"))

    def real(self, argv: Sequence[str]) -> Ran:
        proc = subprocess.run(list(argv), capture_output=True)
        return Ran(proc.returncode, proc.stdout.decode("latin-1"),
                   proc.stderr.decode("latin-1"))

    def step(self, name: str, argv: Sequence[str], expect: Callable[[Ran], bool],
             *, then_real: Sequence[str] | None = None) -> tuple[Ran, list[KmsgRecord]]:
        """Run kmodd's tool, check it, and (when asked) the real tool on an equivalent step.

        `then_real` is the real tool's command for a state where it must print the same
        (for an insert that kmodd just undid, or a query that changes nothing).
        """
        with self.kmsg.watch() as watch:
            ours = self.kmodd(argv)
            records = watch.records()
        detail: dict[str, Any] = {"kmodd": asdict(ours),
                                  "kmsg": [r.text for r in records]}
        ok = expect(ours)
        if self.compare_real and then_real is not None:
            theirs = self.real(then_real)
            detail["kmod"] = asdict(theirs)
            ok = ok and theirs == ours
        self.checks.append(Check(name, ok, detail))
        return ours, records

    def state(self, name: str) -> InitState | None:
        return SysModules(self.root).initstate(name)


def run_checks(session: Session) -> list[Check]:
    s = session
    fat, vfat, msdos, loop = (s.path(n) for n in ("fat", "vfat", "msdos", "loop"))
    for name in ("vfat", "msdos", "fat", "loop"):
        if s.state(name) is not None:
            s.checks.append(Check(f"precondition: {name} not loaded", False))
            return s.checks

    # 1. a dependency missing: ENOENT and the kernel's lines
    _, records = s.step("insmod vfat without fat: unknown symbols", ["insmod", vfat],
                        lambda r: r.rc == 1 and r.err == (
                            f"insmod: ERROR: could not insert module {vfat}: "
                            "Unknown symbol in module\n"),
                        then_real=["insmod", vfat])
    lines = [r.text for r in module_lines(records, "vfat")]
    s.checks.append(Check("kmsg quotes vfat's unknown symbols", bool(lines) and all(
        re.fullmatch(r"vfat: Unknown symbol \w*fat\w* \(err -2\)", t) for t in lines),
        {"lines": lines}))

    # 2. loading in order, and EEXIST
    s.step("insmod fat", ["insmod", fat], lambda r: (r.rc, r.out, r.err) == (0, "", ""))
    s.checks.append(Check("fat is live", s.state("fat") is InitState.LIVE))
    s.step("insmod fat again: File exists", ["insmod", fat],
           lambda r: r.err == f"insmod: ERROR: could not insert module {fat}: File exists\n",
           then_real=["insmod", fat])
    s.step("insmod vfat", ["insmod", vfat], lambda r: r.rc == 0)

    # 3. lsmod, holders, removal
    s.step("lsmod shows vfat holding fat", ["lsmod"],
           lambda r: any(line.startswith("fat ") and line.endswith(" 1 vfat")
                         for line in r.out.splitlines()),
           then_real=["lsmod"])
    s.step("rmmod fat: in use by vfat", ["rmmod", "fat"],
           lambda r: r.err == "rmmod: ERROR: Module fat is in use by: vfat\n",
           then_real=["rmmod", "fat"])
    s.step("rmmod -f fat: the kernel refuses (EWOULDBLOCK)", ["rmmod", "-f", "fat"],
           lambda r: r.rc == 1 and r.err.endswith(
               "rmmod: ERROR: could not remove module fat: Resource temporarily unavailable\n"),
           then_real=["rmmod", "-f", "fat"])
    s.step("rmmod vfat", ["rmmod", "vfat"], lambda r: (r.rc, r.err) == (0, ""))
    s.step("rmmod fat", ["rmmod", "fat"], lambda r: (r.rc, r.err) == (0, ""))
    s.step("rmmod fat once more: not loaded", ["rmmod", "fat"],
           lambda r: r.err == "rmmod: ERROR: Module fat is not currently loaded\n",
           then_real=["rmmod", "fat"])

    # 4. parameters
    _, records = s.step("insmod loop with a bad max_part", ["insmod", loop, "max_part=abc"],
                        lambda r: r.err == f"insmod: ERROR: could not insert module {loop}: "
                                          "Invalid parameters\n",
                        then_real=["insmod", loop, "max_part=abc"])
    s.checks.append(Check("kmsg: loop's invalid parameter line",
                          "loop: `abc' invalid for parameter `max_part'" in
                          [r.text for r in records], {"kmsg": [r.text for r in records]}))
    _, records = s.step("insmod fat with an unknown parameter loads", ["insmod", fat, "bogus=1"],
                        lambda r: r.rc == 0)
    s.checks.append(Check("kmsg: fat's unknown parameter warning",
                          "fat: unknown parameter 'bogus' ignored" in
                          [r.text for r in records], {"kmsg": [r.text for r in records]}))

    # 5. forcing (taints the kernel, so last)
    s.step("insmod -f msdos ignores versions", ["insmod", "-f", msdos], lambda r: r.rc == 0)
    tainted = SysModules(s.root).tainted()
    letters = "" if tainted is None or not hasattr(tainted, "letters") else tainted.letters
    s.checks.append(Check("forced load taints F", "F" in letters, {"tainted": letters}))
    for name in ("msdos", "fat"):
        s.step(f"cleanup: rmmod {name}", ["rmmod", name], lambda r: r.rc == 0)
    return s.checks


def run_test_module_checks(s: Session, directory: str) -> list[Check]:
    """The checks with tests/modules' own modules (built against the guest kernel's headers)."""
    dep, user, nodev = (os.path.join(directory, f"kmodd_{n}.ko") for n in ("dep", "user",
                                                                          "nodev"))
    _, records = s.step("insmod kmodd_user without kmodd_dep", ["insmod", user],
                        lambda r: r.err == f"insmod: ERROR: could not insert module {user}: "
                                          "Unknown symbol in module\n",
                        then_real=["insmod", user])
    s.checks.append(Check("kmsg: kmodd_user's unknown symbol",
                          [r.text for r in module_lines(records, "kmodd_user")
                           if "Unknown symbol" in r.text] ==
                          ["kmodd_user: Unknown symbol kmodd_dep_value (err -2)"],
                          {"kmsg": [r.text for r in records]}))
    _, records = s.step("insmod kmodd_dep with parameters", ["insmod", dep, "level=2", "tag=x"],
                        lambda r: r.rc == 0)
    params = SysModules(s.root).parameters("kmodd_dep")
    s.checks.append(Check("kmodd_dep's parameters in sysfs",
                          (params.get("level"), params.get("tag")) == ("2", "x"),
                          {"parameters": params}))
    s.step("insmod kmodd_user", ["insmod", user], lambda r: r.rc == 0)
    s.step("rmmod kmodd_dep: in use by kmodd_user", ["rmmod", "kmodd_dep"],
           lambda r: r.err == "rmmod: ERROR: Module kmodd_dep is in use by: kmodd_user\n",
           then_real=["rmmod", "kmodd_dep"])
    _, records = s.step("insmod kmodd_nodev: its init finds no device", ["insmod", nodev],
                        lambda r: r.err == f"insmod: ERROR: could not insert module {nodev}: "
                                          "No such device\n",
                        then_real=["insmod", nodev])
    s.checks.append(Check("kmodd_nodev left nothing behind", s.state("kmodd_nodev") is None))
    for name in ("kmodd_user", "kmodd_dep"):
        s.step(f"cleanup: rmmod {name}", ["rmmod", name], lambda r: r.rc == 0)
    return s.checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moddir", default=f"/lib/modules/{os.uname().release}")
    parser.add_argument("--no-real", action="store_true",
                        help="do not compare with the real kmod tools")
    parser.add_argument("--test-modules", metavar="DIR",
                        help="also check with tests/modules' kmodd_*.ko built for this kernel")
    args = parser.parse_args(argv)
    session = Session(Root(), args.moddir, compare_real=not args.no_real)
    if args.test_modules:
        run_test_module_checks(session, args.test_modules)
    checks = run_checks(session)
    json.dump([asdict(c) for c in checks], sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
