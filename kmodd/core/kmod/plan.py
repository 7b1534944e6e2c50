"""Load plans: what `modprobe` would insert, in which order, with which options.

`plan_probe` is libkmod's `kmod_module_probe_insert_module` up to the point where it starts
inserting: the early exits (already in the kernel, blacklisted), then the probe list built
the way `__kmod_module_get_probe_list` builds it (each dependency with its pre- and
post-softdeps around it, in load order; softdeps followed recursively, loops cut by the
`visited` mark; the requested module last; a module with softdeps ignores its install
command). The result is a `Plan` value.

`run_plan` walks a plan step by step exactly like libkmod's insertion loop: skip what is
already in the kernel, print the action when asked, insert or run the install command
(through an `Actions` object: the real kernel, a simulated one, or nothing for a dry run),
treat EEXIST as success, ignore failures of softdeps, stop at the first failure of a
required module. A dry run and a real load share this one path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag, StrEnum
from errno import EEXIST
from typing import Protocol

from kmodd.core.kmod.initstate import IN_KERNEL, InitState
from kmodd.core.kmod.resolve import Module, Resolver


class ProbeFlag(IntFlag):
    """libkmod's KMOD_PROBE_* flags (same values)."""

    FORCE_VERMAGIC = 0x00001
    FORCE_MODVERSION = 0x00002
    IGNORE_COMMAND = 0x00004
    IGNORE_LOADED = 0x00008
    DRY_RUN = 0x00010
    FAIL_ON_LOADED = 0x00020
    APPLY_BLACKLIST_ALL = 0x10000
    APPLY_BLACKLIST = 0x20000
    APPLY_BLACKLIST_ALIAS_ONLY = 0x40000


class Skip(StrEnum):
    """Why a plan has no steps to run."""

    LOADED = "loaded"  # the module is live or built in
    BLACKLISTED = "blacklisted"  # a blacklist flag applies to it


class StepAction(StrEnum):
    """What is done for a step (the control interface's `PlanStep.action`)."""

    INSERT = "insert"
    INSTALL = "install"  # its `install` command from modprobe.d runs instead
    SKIP = "skip"  # nothing: it is in the kernel already, or the plan has no steps


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of the probe list, as a value: everything running it needs was looked up
    while planning, so a worker thread runs it without the resolver."""

    name: str
    path: str | None  # the module file (modules.dep); None: no file is known
    builtin: bool  # built into the kernel (modules.builtin)
    options: str | None  # config options, plus the command line's for the requested module
    command: str | None  # the install command to run instead of inserting, if any
    required: bool  # the requested module or one of its dependencies (not a softdep)
    requested: bool  # the module that was asked for

    @property
    def action(self) -> StepAction:
        """What running it does (unless it is in the kernel already)."""
        return StepAction.INSERT if self.command is None else StepAction.INSTALL


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of planning, a value: either an early answer or the steps to run."""

    name: str  # the requested module
    steps: tuple[Step, ...] = ()
    #: Why there are no steps (None: there are). `early` is then what running the plan
    #: answers at once: EEXIST (loaded, with FAIL_ON_LOADED) or 0.
    skip: Skip | None = None
    early: int | None = None


class LiveState(Protocol):
    """How modules stand in the kernel right now."""

    def initstate(self, name: str) -> InitState | None:
        """The state of /sys/module/<name>; None when it is not loaded (or unreadable)."""
        ...


def initstate(resolver: Resolver, live: LiveState, mod: Module) -> InitState | None:
    """kmod_module_get_initstate: builtin (from the index) first, then /sys/module."""
    if resolver.is_builtin(mod):
        return InitState.BUILTIN
    return live.initstate(mod.name)


def in_kernel(resolver: Resolver, live: LiveState, mod: Module) -> bool:
    return initstate(resolver, live, mod) in IN_KERNEL


def step_in_kernel(live: LiveState, step: Step) -> bool:
    """`in_kernel` for a planned step (its builtin bit was looked up while planning)."""
    return step.builtin or live.initstate(step.name) in IN_KERNEL


def options_concat(opt: str | None, extra: str | None) -> str | None:
    """module_options_concat: `opt + " " + extra`; a space follows config options always."""
    if not opt and not extra:
        return None
    out = ""
    if opt is not None:
        out = opt + " "
    if extra is not None:
        out += extra
    return out


_IGNORE_LOADED = int(ProbeFlag.IGNORE_LOADED)
_FAIL_ON_LOADED = int(ProbeFlag.FAIL_ON_LOADED)
_IGNORE_COMMAND = int(ProbeFlag.IGNORE_COMMAND)
_DRY_RUN = int(ProbeFlag.DRY_RUN)
_BLACKLIST = int(ProbeFlag.APPLY_BLACKLIST)
_BLACKLIST_ALL = int(ProbeFlag.APPLY_BLACKLIST_ALL)
_BLACKLIST_ALIAS_ONLY = int(ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY)


def plan_probe(
    resolver: Resolver,
    live: LiveState,
    mod: Module,
    flags: ProbeFlag,
    extra_options: str | None = None,
    *,
    not_in_kernel: bool = False,
) -> Plan:
    """Decide what probing `mod` means, without doing any of it.

    `not_in_kernel`: the caller has just found `mod` neither live nor built in, so that
    question is not asked again.
    """
    f = int(flags)  # enum.Flag operators cost a microsecond each; this runs per module
    if not f & _IGNORE_LOADED and not not_in_kernel and in_kernel(resolver, live, mod):
        early = EEXIST if f & _FAIL_ON_LOADED else 0
        return Plan(mod.name, skip=Skip.LOADED, early=early)
    blacklist_applies = f & (_BLACKLIST_ALL | _BLACKLIST) or (
        mod.alias is not None and f & _BLACKLIST_ALIAS_ONLY)
    if blacklist_applies and resolver.is_blacklisted(mod):
        return Plan(mod.name, skip=Skip.BLACKLISTED, early=0)

    probe = probe_list(resolver, mod, bool(f & _IGNORE_COMMAND))
    if f & _BLACKLIST_ALL:
        probe = [m for m in probe if not resolver.is_blacklisted(m)]
        if not probe:
            return Plan(mod.name, skip=Skip.BLACKLISTED, early=0)
    steps = []
    for m in probe:
        opts = options_concat(resolver.options(m), extra_options if m is mod else None)
        cmd = resolver.install_command(m)
        steps.append(
            Step(
                name=m.name,
                path=resolver.path(m),
                builtin=resolver.is_builtin(m),
                options=opts,
                command=cmd if cmd is not None and not m.ignorecmd else None,
                required=m.required,
                requested=m is mod,
            )
        )
    return Plan(mod.name, steps=tuple(steps))


def probe_list(resolver: Resolver, mod: Module, ignorecmd: bool) -> list[Module]:
    """kmod_module_get_probe_list."""
    resolver.reset_marks()
    out: list[Module] = []
    _probe_list(resolver, mod, True, ignorecmd, out)
    return out


def _probe_list(
    resolver: Resolver, mod: Module, required: bool, ignorecmd: bool, out: list[Module]
) -> None:
    if mod.visited:
        return
    mod.visited = True
    marked = resolver.marked
    marked.append(mod)
    deps = resolver.dependencies(mod)
    if required:
        mod.required = True
        for d in deps:
            d.required = True
        marked.extend(deps)
    for d in deps:
        _fill_softdep(resolver, d, out)
    if ignorecmd:
        out.append(mod)
        mod.ignorecmd = True
    else:
        _fill_softdep(resolver, mod, out)


def _fill_softdep(resolver: Resolver, mod: Module, out: list[Module]) -> None:
    pre, post = resolver.softdeps(mod)
    for m in pre:
        _probe_list(resolver, m, False, False, out)
    out.append(mod)
    mod.ignorecmd = bool(pre or post)
    for m in post:
        _probe_list(resolver, m, False, False, out)


# -- running a plan --------------------------------------------------------------------------


class Actions(Protocol):
    """What running a plan does to the system. A dry run never calls these."""

    def insert(self, step: Step, options: str, flags: ProbeFlag) -> int:
        """Insert the step's module file (no file known: ENOENT); 0 or an errno."""
        ...

    def run_install(self, step: Step, command: str) -> int:
        """Run an install command ($CMDLINE_OPTS already expanded); 0 or an errno."""
        ...


ShowAction = Callable[[Step, bool, str], None]


def expand_cmdline_opts(command: str, options: str | None) -> str:
    """Replace every `$CMDLINE_OPTS` with the combined option string (may be empty)."""
    return command.replace("$CMDLINE_OPTS", options or "")


def run_plan(
    live: LiveState,
    plan: Plan,
    flags: ProbeFlag,
    actions: Actions | None,
    show: ShowAction | None = None,
    on_step: Callable[[Step, int], None] | None = None,
) -> int:
    """Carry out a plan like libkmod's insertion loop; 0, or the errno that ended it (what
    libkmod returns negated; a blacklisted module, for which it returns the flag, is 0).
    `on_step` gets each step and its errno (EEXIST: it was in the kernel already). It
    touches no resolver: any thread may run it."""
    if plan.early is not None:
        return plan.early
    f = int(flags)
    check_loaded, dry_run = not f & _IGNORE_LOADED, bool(f & _DRY_RUN)
    err = 0
    for step in plan.steps:
        if check_loaded and step_in_kernel(live, step):
            err = EEXIST
        else:
            opts = step.options or ""
            if step.command is not None:
                if show is not None:
                    show(step, True, opts)
                if not dry_run and actions is not None:
                    err = actions.run_install(step,
                                              expand_cmdline_opts(step.command, step.options))
            else:
                if show is not None:
                    show(step, False, opts)
                if not dry_run and actions is not None:
                    err = actions.insert(step, opts, flags)
        if on_step is not None:
            on_step(step, err)
        if err == EEXIST and step.requested and f & _FAIL_ON_LOADED:
            break
        if err == EEXIST or not step.required:
            err = 0
        elif err:
            break
    return err
