"""What udev's `kmod load` decides for one modalias or module name, as values.

systemd's `module_load_and_warn` (`src/shared/module-util.c`) looks the name up
(`kmod_module_new_from_lookup`) and, for **every** module returned: a built-in is "built in",
a LIVE module "already loaded", anything else is probed with `KMOD_PROBE_APPLY_BLACKLIST`
(the blacklist applies to names and aliases alike, as `modprobe -b`), where a blacklisted
module is "deny-listed (by kmod)". `decide` makes those decisions and the probe plans
(`core.kmod.plan.plan_probe`) without doing anything; the daemon runs the plans.

A decision not to load a module is its `Outcome` (`core.autoload.outcome`, where the
results of loading it are too): one vocabulary for the journal, the control socket and
`kmodctl`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.plan import LiveState, Plan, ProbeFlag, Skip, initstate, plan_probe
from kmodd.core.kmod.resolve import Module, ModuleLookupError, Resolver

#: udev's flags for `kmod load` (module_load_and_warn).
AUTOLOAD_FLAGS = ProbeFlag.APPLY_BLACKLIST
#: modprobe's flags for a name given on its command line (an explicit request).
MODPROBE_FLAGS = ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY
#: The kernel's own deny list on its command line (`module_blacklist=a,b`).
KERNEL_BLACKLIST_PARAMETER = "module_blacklist="
#: The decision about a candidate that is to be loaded (any other decision is its outcome).
LOAD = "load"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One module a lookup returned, and what was decided about it: its outcome when it is
    not to be loaded (built in, already loaded, blacklisted), None when its plan is to run."""

    module: Module
    outcome: Outcome | None
    plan: Plan | None = None  # the probe plan (a blacklisted module's is empty)

    @property
    def name(self) -> str:
        return self.module.name

    @property
    def decision(self) -> str:
        """The decision in one word: LOAD, or the outcome's."""
        return LOAD if self.outcome is None else self.outcome.value


@dataclass(frozen=True, slots=True)
class Resolution:
    """A lookup key (a modalias or module name), where its modules came from, and decisions.

    `source` is the lookup step that answered (`resolve.LOOKUP_SOURCES`), None when nothing
    matched; `error` is the errno of a lookup that failed outright (an invalid alias).
    """

    key: str
    source: str | None
    candidates: tuple[Candidate, ...]
    error: int = 0

    @property
    def found(self) -> bool:
        return bool(self.candidates)

    @property
    def to_load(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.outcome is None)


def decide(resolver: Resolver, live: LiveState, key: str,
           flags: ProbeFlag = AUTOLOAD_FLAGS, options: str | None = None) -> Resolution:
    """Look `key` up and decide, for every module found, as module_load_and_warn does
    (`options`: arguments for the modules found, after modprobe.d's, as modprobe's command
    line gives them)."""
    try:
        modules = resolver.lookup(key)
    except ModuleLookupError as e:
        return Resolution(key, None, (), e.errno)
    candidates = []
    for mod in modules:
        state = initstate(resolver, live, mod)
        if state is InitState.BUILTIN:
            candidates.append(Candidate(mod, Outcome.BUILTIN))
        elif state is InitState.LIVE:
            candidates.append(Candidate(mod, Outcome.ALREADY_LOADED))
        else:
            plan = plan_probe(resolver, live, mod, flags, options, not_in_kernel=True)
            if plan.skip is Skip.BLACKLISTED:
                candidates.append(Candidate(mod, Outcome.BLACKLISTED, plan))
            elif plan.skip is Skip.LOADED:
                candidates.append(Candidate(mod, Outcome.ALREADY_LOADED, plan))
            else:
                candidates.append(Candidate(mod, None, plan))
    return Resolution(key, resolver.last_source, tuple(candidates))


def redecide(resolver: Resolver, live: LiveState, earlier: Resolution) -> Resolution | None:
    """`earlier`'s decisions again, for the kernel's state now, reusing its plans.

    A plan depends on the index and the configuration only (which the resolver holds);
    what the kernel has loaded meanwhile only changes which candidates are skipped. None
    when a candidate now needs a plan that was never made (it was live before): decide
    afresh then.
    """
    candidates = []
    for c in earlier.candidates:
        state = initstate(resolver, live, c.module)
        if state is InitState.BUILTIN:
            candidates.append(Candidate(c.module, Outcome.BUILTIN, c.plan))
        elif state is InitState.LIVE:
            candidates.append(Candidate(c.module, Outcome.ALREADY_LOADED, c.plan))
        elif c.plan is None or c.plan.skip is Skip.LOADED:
            return None
        elif c.plan.skip is Skip.BLACKLISTED:
            candidates.append(Candidate(c.module, Outcome.BLACKLISTED, c.plan))
        else:
            candidates.append(Candidate(c.module, None, c.plan))
    return Resolution(earlier.key, earlier.source, tuple(candidates), earlier.error)


def kernel_module_blacklist(cmdline: str) -> frozenset[str]:
    """Module names in the kernel's `module_blacklist=` (comma-separated, every occurrence)."""
    names: set[str] = set()
    for word in cmdline.split():
        if word.startswith(KERNEL_BLACKLIST_PARAMETER):
            value = word[len(KERNEL_BLACKLIST_PARAMETER):].strip('"')
            names.update(n.replace("-", "_") for n in value.split(",") if n)
    return frozenset(names)
