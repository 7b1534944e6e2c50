"""`modprobe -r`: remove a module, its unused dependencies and its softdeps, as kmod 30 does.

The order (tools/modprobe.c: rmmod_do_module): post-softdeps in reverse, then (with
`--remove-dependencies`/`--remove-holders`) the modules holding it, then the module itself
(refusing when in use, unless a remove command or `-w` takes over), then every dependency
whose use count is zero at that moment (errors ignored), then pre-softdeps in reverse.
The outside world is reached through `RemoveIO`; messages go through its `log`. Results are
0 or a positive errno (kmod's are the same, negated).
"""

from __future__ import annotations

from dataclasses import dataclass
from errno import EBUSY, ENOENT
from typing import Protocol

from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.plan import LiveState, initstate
from kmodd.core.kmod.resolve import Module, Resolver

REMOVE_HOLDERS = 0x1
IGNORE_BUILTIN = 0x2


@dataclass(frozen=True, slots=True)
class RemoveOptions:
    ignore_commands: bool = False
    ignore_loaded: bool = False
    first_time: bool = False
    wait: bool = False  # -w given: the refcount check is left to the retry loop
    quiet_inuse: bool = False


class RemoveIO(Protocol):
    def log(self, message: str) -> None:
        """kmod's LOG(): FATAL (or WARNING under -a); may end the run."""
        ...

    def refcnt(self, name: str) -> int:
        """The use count, or minus an errno (libkmod's `kmod_module_get_refcnt`)."""
        ...

    def holders(self, name: str) -> list[str] | None: ...

    def remove_module(self, mod: Module) -> int:
        """rmmod_do_remove_module (prints `rmmod X` when showing; dry runs stop there);
        0 or an errno."""
        ...

    def run_remove_command(self, mod: Module, command: str) -> int:
        """command_do("remove", ...), $CMDLINE_OPTS empty; 0, or the command's exit status
        (1 when it could not run)."""
        ...


def remove(resolver: Resolver, live: LiveState, io: RemoveIO, alias: str, flags: int,
           opts: RemoveOptions) -> int:
    """rmmod(): look the name up, then remove each module found; 0 or the first errno."""
    mods = resolver.lookup(alias)
    err = 0
    if not mods:
        io.log(f"Module {alias} not found.\n")
        err = ENOENT
    for mod in mods:
        err = remove_module(resolver, live, io, mod, flags, opts)
        if err:
            break
    return err


def remove_module(resolver: Resolver, live: LiveState, io: RemoveIO, mod: Module, flags: int,
                  opts: RemoveOptions) -> int:
    pre: list[Module] = []
    post: list[Module] = []
    cmd: str | None = None
    if not opts.ignore_commands:
        pre, post = resolver.softdeps(mod)
        cmd = resolver.remove_command(mod)
    if cmd is None and not opts.ignore_loaded:
        state = initstate(resolver, live, mod)
        if state is None:
            if opts.first_time:
                io.log(f"Module {mod.name} is not in kernel.\n")
                return ENOENT
            return 0
        if state is InitState.BUILTIN:
            if flags & IGNORE_BUILTIN:
                return 0
            io.log(f"Module {mod.name} is builtin.\n")
            return ENOENT
    _remove_list(resolver, live, io, post, False, opts)
    if flags & REMOVE_HOLDERS:
        holders = [resolver.new_from_name(h) for h in io.holders(mod.name) or []]
        err = _remove_list(resolver, live, io, holders, True, opts)
        if err:
            return err
    if cmd is None and not opts.ignore_loaded and not opts.wait and io.refcnt(mod.name) > 0:
        if not opts.quiet_inuse:
            io.log(f"Module {mod.name} is in use.\n")
        return EBUSY
    err = io.remove_module(mod) if cmd is None else io.run_remove_command(mod, cmd)
    if err:
        return err
    if cmd is None:
        for dep in resolver.dependencies(mod):
            if io.refcnt(dep.name) == 0:
                io.remove_module(dep)
    _remove_list(resolver, live, io, pre, False, opts)
    return err


def _remove_list(resolver: Resolver, live: LiveState, io: RemoveIO, mods: list[Module],
                 stop_on_errors: bool, opts: RemoveOptions) -> int:
    for m in reversed(mods):
        r = remove_module(resolver, live, io, m, IGNORE_BUILTIN, opts)
        if r and stop_on_errors:
            return r
    return 0
