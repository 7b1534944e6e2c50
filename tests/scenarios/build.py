"""Scenarios: small fake roots described in `scenario.toml`, with a command and its goldens.

Each directory `tests/scenarios/<name>/` holds

* `scenario.toml`: what the fake root contains (see `build_root`), a description and the kmod
  testsuite test it ports;
* `cmd`: the command, one argument per line (the first is the tool, `modprobe`);
* `expected.stdout`, `expected.stderr`, `expected.rc`: what the real kmod 30 printed and
  returned, recorded with `python -m tests.scenarios.record` and committed.

`@ROOT@` in `cmd`, in `cwd` and in the goldens stands for the fake root's absolute path (it
changes from run to run). The root is built at test time: files from `[files]`, real ELF
modules from `[[modules]]` (tests/kobuild.py), `modules.order` in module order, then the real
depmod run as if the fake root were `/` (so depmod.d `external` directories and the paths in
modules.dep look as they would on a real system). Only a root with depmod.d files needs a
mount namespace (root) for that; the others are indexed with `depmod -b`, which writes the same
bytes, so that kmodd's side of their goldens runs as any user.

scenario.toml keys:

    description = "..."             # what the scenario shows
    ports = "modprobe_show_depends"  # the kmod testsuite test(s), or "" for an addition
    kver = "4.4.4"                  # optional, default 4.4.4
    cwd = "@ROOT@/home/foo"         # optional working directory
    env = { KEY = "value" }         # optional extra environment
    depmod = true                   # optional, default true
    remove_after_depmod = ["lib/modules/4.4.4/kernel/x.ko"]   # optional
    masks = ["ctx=0x[0-9a-f]+"]     # optional: regexes whose matches (run-to-run noise such
                                    # as pointers) read "<masked>" in goldens and results

    [[modules]]
    file = "kernel/mod-loop-a.ko"   # relative to lib/modules/<kver>, or "/abs/in/root.ko"
    name = "mod_loop_a"             # optional, default from the file name
    exports = ["printA"]            # optional
    needs = ["printB"]              # optional (undefined strong symbols)
    modinfo = ["license=GPL"]       # optional

    [files]
    "etc/modprobe.d/x.conf" = "..."  # relative to the root; "-> target" makes a symlink
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from tests.oracle.kmodrun import (
    Case,
    KmodRunner,
    Result,
    run_depmod,
    run_depmod_in_place,
    write_tree,
)

SCENARIOS_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_KVER = "4.4.4"
ROOT_MARK = "@ROOT@"
MASKED = b"<masked>"


@dataclass(frozen=True)
class Scenario:
    """One scenario directory, parsed."""

    name: str
    path: str
    spec: dict[str, Any]
    argv: tuple[str, ...]

    @property
    def kver(self) -> str:
        return str(self.spec.get("kver", DEFAULT_KVER))

    @property
    def depmod_needs_namespace(self) -> bool:
        """True when depmod must see the fake root as `/` (a mount namespace, so root): the
        root has depmod.d files, whose directories (`external`) are absolute paths."""
        return bool(self.spec.get("depmod", True)) and any(
            "depmod.d/" in path for path in self.spec.get("files", {}))

    def case(self, root: str) -> Case:
        """The command, with `@ROOT@` replaced by the fake root's path."""
        cwd = self.spec.get("cwd")
        return Case.of(*(a.replace(ROOT_MARK, root) for a in self.argv),
                       env={k: str(v).replace(ROOT_MARK, root)
                            for k, v in self.spec.get("env", {}).items()},
                       cwd=cwd.replace(ROOT_MARK, root) if cwd else None)

    def mask(self, result: Result) -> Result:
        """`result` with every match of the scenario's `masks` regexes replaced by <masked>."""
        out, err = result.stdout, result.stderr
        for pattern in self.spec.get("masks", []):
            regex = re.compile(str(pattern).encode())
            out, err = regex.sub(MASKED, out), regex.sub(MASKED, err)
        return Result(result.rc, out, err)

    def expected(self, root: str) -> Result | None:
        """The committed goldens with `@ROOT@` filled in; None before they are recorded."""
        files = [os.path.join(self.path, f"expected.{n}") for n in ("stdout", "stderr", "rc")]
        if not all(os.path.exists(f) for f in files):
            return None
        out, err, rc = (_read(f) for f in files)
        mark, real = ROOT_MARK.encode(), root.encode()
        return Result(int(rc.strip()), out.replace(mark, real), err.replace(mark, real))

    def record(self, root: str, result: Result) -> None:
        """Write `result` as the goldens, with the fake root's path turned into `@ROOT@`."""
        result = self.mask(result)
        mark, real = ROOT_MARK.encode(), root.encode()
        for name, data in (("stdout", result.stdout), ("stderr", result.stderr),
                           ("rc", f"{result.rc}\n".encode())):
            with open(os.path.join(self.path, f"expected.{name}"), "wb") as f:
                f.write(data.replace(real, mark))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load(name: str) -> Scenario:
    path = os.path.join(SCENARIOS_DIR, name)
    with open(os.path.join(path, "scenario.toml"), "rb") as f:
        spec = tomllib.load(f)
    with open(os.path.join(path, "cmd"), encoding="utf-8") as f:
        argv = tuple(line.rstrip("\n") for line in f)
    return Scenario(name, path, spec, argv)


def names() -> list[str]:
    """Every scenario directory, sorted."""
    return sorted(d for d in os.listdir(SCENARIOS_DIR)
                  if os.path.exists(os.path.join(SCENARIOS_DIR, d, "scenario.toml")))


def build_root(scenario: Scenario, root: str, runner: KmodRunner | None = None) -> str:
    """Lay out the scenario's fake root under `root` (which must not exist yet); return it.

    depmod runs through `runner` when given (one namespace for many scenarios), without a
    namespace when the root does not need one, else in a namespace of its own."""
    from tests import kobuild

    os.makedirs(root)
    moddir_rel = f"lib/modules/{scenario.kver}"
    files: dict[str, str | bytes] = {"proc/cmdline": "", "sys/module/": ""}
    files.update(scenario.spec.get("files", {}))
    write_tree(root, files)
    order = []
    for mod in scenario.spec.get("modules", []):
        rel = str(mod["file"])
        path = os.path.join(root, rel.lstrip("/")) if rel.startswith("/") else \
            os.path.join(root, moddir_rel, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        base = os.path.basename(rel).split(".", 1)[0]
        kobuild.write_ko(path, kobuild.KoSpec(
            name=str(mod.get("name", base.replace("-", "_"))),
            modinfo=list(mod.get("modinfo", ["license=GPL"])),
            exports=list(mod.get("exports", [])), needs=list(mod.get("needs", []))))
        if not rel.startswith("/"):
            order.append(rel)
    order_file = os.path.join(root, moddir_rel, "modules.order")
    if order and not os.path.exists(order_file):
        with open(order_file, "w", encoding="ascii") as f:
            f.writelines(f"{rel}\n" for rel in order)
    if scenario.spec.get("depmod", True):
        os.makedirs(os.path.join(root, moddir_rel), exist_ok=True)
        if runner is None and not scenario.depmod_needs_namespace:
            run_depmod_in_place(root, scenario.kver)
        else:
            run_depmod(root, scenario.kver, runner=runner)
    for rel in scenario.spec.get("remove_after_depmod", []):
        os.unlink(os.path.join(root, rel))
    return root
