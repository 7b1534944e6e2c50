"""Load a module as modprobe would and record how it failed, for `kmodctl explain --try`.

`attempt(target, root=..., moddir=...)` runs the same plan a real `modprobe TARGET OPTIONS`
runs (kmodd.core.kmod.plan with the host's actions) while watching `/dev/kmsg`, and returns the
failed attempt: the module asked for, the step that failed (a dependency or the module),
its errno, what gave it (finit_module, init_module, open, an install command), the kernel's
log records written meanwhile and what kmod would have printed. The result goes to
`kmodd.system.diagnose.explain(..., failure=...)`.
"""

from __future__ import annotations

import errno as E
import io
import os
from collections.abc import Mapping
from typing import BinaryIO

from kmodd.core.explain.facts import FailedAttempt
from kmodd.core.kmod.config import Config
from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.core.kmod.plan import ProbeFlag, Step, plan_probe, run_plan
from kmodd.core.kmod.resolve import ModuleLookupError, Resolver
from kmodd.system.actions import HostActions
from kmodd.system.kernel import InsertResult, KernelPort, LinuxKernel, init_declined
from kmodd.system.kmsg import DevKmsg
from kmodd.system.moddb import load_config, raw_indexes
from kmodd.system.modstate import SysModules
from kmodd.system.root import Root
from kmodd.system.sysview import FileView


class _Quiet:
    """What HostActions reports to: messages kept, command output kept."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = dict(environ)
        self.stdout: BinaryIO = io.BytesIO()
        self.stderr: BinaryIO = io.BytesIO()
        self.messages: list[str] = []

    @property
    def log(self) -> _Quiet:
        return self

    def err(self, text: str) -> None:
        self.messages.append(text.strip())

    def show(self, text: str) -> None:
        pass

    def LOG(self, message: str) -> None:
        self.messages.append(message.strip())

    def libkmod(self, event: LibkmodEvent) -> None:
        self.messages.append(event.text.strip())


class _Recording:
    """A KernelPort that remembers the last insert's result (which step gave the errno)."""

    def __init__(self, kernel: KernelPort) -> None:
        self.kernel = kernel
        self.last: InsertResult | None = None

    @property
    def modules(self) -> SysModules:
        return self.kernel.modules

    def insert(self, path: str, options: str | bytes = "", *, force_vermagic: bool = False,
               force_modversion: bool = False) -> InsertResult:
        self.last = self.kernel.insert(path, options, force_vermagic=force_vermagic,
                                       force_modversion=force_modversion)
        return self.last

    def delete(self, name: str, *, force: bool = False) -> int:
        return self.kernel.delete(name, force=force)


def attempt(target: str, *, root: Root, moddir: str, kernel: KernelPort | None = None,
            config: Config | None = None, options: str | None = None,
            environ: Mapping[str, str] | None = None) -> FailedAttempt | None:
    """Load `target` as `modprobe TARGET OPTIONS` would, watching the kernel log.

    Returns None when everything loaded (or nothing needed loading), else the failed
    attempt: the first module whose required step failed, its errno, what gave it, the
    kernel's log records written meanwhile and what kmod would have printed. A module whose
    own init answered EEXIST failed too (`declined`), though modprobe counts it as loaded.
    """

    real_moddir = root.path(moddir)
    if config is None:
        config = load_config(root, moddir, real_moddir=real_moddir)
    indexes, _ = raw_indexes(moddir, real_moddir)
    files = FileView(root)
    front = _Quiet(environ if environ is not None else os.environ)
    resolver = Resolver(indexes, config, files, log=front.libkmod)
    port = _Recording(kernel if kernel is not None else LinuxKernel(root))
    try:
        mods = resolver.lookup(target)
    except ModuleLookupError:
        mods = []
    if not mods:
        return FailedAttempt(target, E.ENOENT, "lookup", kmsg=(), options=options)
    failed: list[tuple[Step, int, str | None, bool]] = []  # the first: step, err, stage, declined

    def on_step(step: Step, err: int) -> None:
        last, port.last = port.last, None  # this step's insert, if it made one
        declined = (err == E.EEXIST and step.command is None and last is not None
                    and init_declined(port.modules, step.name, last))
        if ((err and err != E.EEXIST) or declined) and step.required and not failed:
            stage = "install command" if step.command is not None else \
                (last.syscall if last is not None else None)
            failed.append((step, err, stage, declined))

    actions = HostActions(front, port, None if root.is_host else root)
    flags = ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY
    with DevKmsg(root).watch() as watch:
        for mod in mods:
            plan = plan_probe(resolver, port.modules, mod, flags, options)
            port.last = None
            err = run_plan(port.modules, plan, flags, actions, on_step=on_step)
            if err or failed:
                records = tuple(watch.records())
                step, step_err, stage, declined = failed[0] if failed else \
                    (None, err, None, False)
                return FailedAttempt(
                    module=mod.name, errno=step_err, stage=stage,
                    step=step.name if step is not None else None, kmsg=records,
                    options=options, messages=tuple(front.messages), declined=declined)
    return None
