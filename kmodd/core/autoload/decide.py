"""What udev's `kmod load` decides for one modalias or module name, as values, and how it is told.

systemd's `module_load_and_warn` (`src/shared/module-util.c`) looks the name up
(`kmod_module_new_from_lookup`) and, for **every** module returned: a built-in is "built in",
a LIVE module "already loaded", anything else is probed with `KMOD_PROBE_APPLY_BLACKLIST`
(the blacklist applies to names and aliases alike, as `modprobe -b`), where a blacklisted
module is "deny-listed (by kmod)". `decide` makes those decisions and the probe plans
(`core.kmod.plan.plan_probe`) without doing anything; the daemon runs the plans.

The closed set of results the daemon reports (`LoadOutcome`), the wording of systemd's
messages (`MESSAGES`) and the log level of each result (`LOG_LEVELS`) are tables here, so
that the journal, the control socket and `kmodctl` use one vocabulary. The levels follow
module_load_and_warn, quiet for autoload and loud for explicit requests, with one change:
a real failure (bad format, rejected signature, unknown symbol, ...) is a warning with its
cause even for autoload, where udev logs it at debug level and users never see it.
"""

from __future__ import annotations

import errno as E
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.libkmodlog import Priority
from kmodd.core.kmod.plan import LiveState, Plan, ProbeFlag, Skip, initstate, plan_probe
from kmodd.core.kmod.resolve import Module, ModuleLookupError, Resolver

#: udev's flags for `kmod load` (module_load_and_warn).
AUTOLOAD_FLAGS = ProbeFlag.APPLY_BLACKLIST
#: modprobe's flags for a name given on its command line (an explicit request).
MODPROBE_FLAGS = ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY
#: The kernel's own deny list on its command line (`module_blacklist=a,b`).
KERNEL_BLACKLIST_PARAMETER = "module_blacklist="


class Decision(StrEnum):
    """What was decided about one module a lookup returned."""

    LOAD = "load"
    BUILTIN = "builtin"
    ALREADY_LOADED = "already-loaded"
    BLACKLISTED = "blacklisted"


class LoadOutcome(StrEnum):
    """Closed set of results the daemon reports per module (journal `KMODD_OUTCOME`)."""

    INSERTED = "inserted"
    COMMAND_RAN = "command-ran"  # an `install` command from modprobe.d ran instead
    ALREADY_LOADED = "already-loaded"
    BUILTIN = "builtin"
    BLACKLISTED = "blacklisted"
    NOT_FOUND = "not-found"
    PLANNED = "planned"  # dry run: it would have been inserted
    FAILED = "failed"
    REMOVED = "removed"
    NOT_LOADED = "not-loaded"


class Request(StrEnum):
    """Who asked: a device (autoload, quiet), an administrator (explicit, loud), or a static
    list read at start (modules-load.d, `modules_load=`, /etc/modules: see LISTED_LEVELS)."""

    AUTOLOAD = "autoload"
    EXPLICIT = "explicit"
    LISTED = "listed"


#: Outcomes that count as the module being there (or meant to be) afterwards.
SUCCESSES = frozenset({LoadOutcome.INSERTED, LoadOutcome.COMMAND_RAN,
                       LoadOutcome.ALREADY_LOADED, LoadOutcome.BUILTIN, LoadOutcome.PLANNED,
                       LoadOutcome.REMOVED, LoadOutcome.NOT_LOADED})

#: Log level per outcome: (autoload, explicit request).
LOG_LEVELS: Mapping[LoadOutcome, tuple[Priority, Priority]] = {
    LoadOutcome.INSERTED: (Priority.INFO, Priority.INFO),
    LoadOutcome.COMMAND_RAN: (Priority.INFO, Priority.INFO),
    LoadOutcome.ALREADY_LOADED: (Priority.DEBUG, Priority.INFO),
    LoadOutcome.BUILTIN: (Priority.DEBUG, Priority.INFO),
    LoadOutcome.BLACKLISTED: (Priority.DEBUG, Priority.NOTICE),
    LoadOutcome.NOT_FOUND: (Priority.DEBUG, Priority.ERR),
    LoadOutcome.PLANNED: (Priority.INFO, Priority.INFO),
    LoadOutcome.FAILED: (Priority.WARNING, Priority.ERR),
    LoadOutcome.REMOVED: (Priority.INFO, Priority.INFO),
    LoadOutcome.NOT_LOADED: (Priority.INFO, Priority.INFO),
}
#: Failures that are no fault of the module (systemd: ENODEV at NOTICE, not an error):
#: the driver loaded, but found no device it supports, or declined because another module
#: of its kind is in charge. (autoload, explicit)
MILD_FAILURES: Mapping[Outcome, tuple[Priority, Priority]] = {
    Outcome.NO_DEVICE: (Priority.INFO, Priority.NOTICE),
    Outcome.DECLINED: (Priority.INFO, Priority.NOTICE),
}

#: A listed module (systemd-modules-load's `module_load_and_warn(..., verbose=true)`) is told
#: as an explicit request, except: a module that cannot be loaded is a warning (the list stays
#: in force for the other modules, and the boot goes on), and a deny-listed one a notice (its
#: level in systemd depends on the version; an admin who listed it wants to see it skipped).
LISTED_LEVELS: Mapping[LoadOutcome, Priority] = {
    LoadOutcome.NOT_FOUND: Priority.WARNING,
    LoadOutcome.FAILED: Priority.WARNING,
    LoadOutcome.BLACKLISTED: Priority.NOTICE,
}

#: systemd's wording (module_load_and_warn), `{name}` the module, `{key}` the looked-up name.
MESSAGES: Mapping[LoadOutcome, str] = {
    LoadOutcome.INSERTED: "Inserted module '{name}'",
    LoadOutcome.COMMAND_RAN: "Ran the install command for module '{name}'",
    LoadOutcome.ALREADY_LOADED: "Module '{name}' is already loaded",
    LoadOutcome.BUILTIN: "Module '{name}' is built in",
    LoadOutcome.BLACKLISTED: "Module '{name}' is deny-listed (by kmod)",
    LoadOutcome.NOT_FOUND: "Failed to find module '{key}'",
    LoadOutcome.PLANNED: "Would insert module '{name}' (dry run)",
    LoadOutcome.FAILED: "Failed to insert module '{name}'",
    LoadOutcome.REMOVED: "Removed module '{name}'",
    LoadOutcome.NOT_LOADED: "Module '{name}' is not loaded",
}
#: The EPERM case systemd tells apart: the kernel's own `module_blacklist=`.
KERNEL_DENY_MESSAGE = "Module '{name}' is deny-listed (by kernel)"

_DECISION_OUTCOMES: Mapping[Decision, LoadOutcome] = {
    Decision.BUILTIN: LoadOutcome.BUILTIN,
    Decision.ALREADY_LOADED: LoadOutcome.ALREADY_LOADED,
    Decision.BLACKLISTED: LoadOutcome.BLACKLISTED,
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One module a lookup returned, and what was decided about it."""

    module: Module
    decision: Decision
    plan: Plan | None = None  # the probe plan, for LOAD (and BLACKLISTED, whose plan is empty)

    @property
    def name(self) -> str:
        return self.module.name

    @property
    def outcome(self) -> LoadOutcome | None:
        """The outcome when nothing is to be done (None for LOAD)."""
        return _DECISION_OUTCOMES.get(self.decision)


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
        return tuple(c for c in self.candidates if c.decision is Decision.LOAD)


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
            candidates.append(Candidate(mod, Decision.BUILTIN))
        elif state is InitState.LIVE:
            candidates.append(Candidate(mod, Decision.ALREADY_LOADED))
        else:
            plan = plan_probe(resolver, live, mod, flags, options, not_in_kernel=True)
            if plan.skip is Skip.BLACKLISTED:
                candidates.append(Candidate(mod, Decision.BLACKLISTED, plan))
            elif plan.skip is Skip.LOADED:
                candidates.append(Candidate(mod, Decision.ALREADY_LOADED, plan))
            else:
                candidates.append(Candidate(mod, Decision.LOAD, plan))
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
            candidates.append(Candidate(c.module, Decision.BUILTIN, c.plan))
        elif state is InitState.LIVE:
            candidates.append(Candidate(c.module, Decision.ALREADY_LOADED, c.plan))
        elif c.plan is None or c.plan.skip is Skip.LOADED:
            return None
        elif c.plan.skip is Skip.BLACKLISTED:
            candidates.append(Candidate(c.module, Decision.BLACKLISTED, c.plan))
        else:
            candidates.append(Candidate(c.module, Decision.LOAD, c.plan))
    return Resolution(earlier.key, earlier.source, tuple(candidates), earlier.error)


def kernel_module_blacklist(cmdline: str) -> frozenset[str]:
    """Module names in the kernel's `module_blacklist=` (comma-separated, every occurrence)."""
    names: set[str] = set()
    for word in cmdline.split():
        if word.startswith(KERNEL_BLACKLIST_PARAMETER):
            value = word[len(KERNEL_BLACKLIST_PARAMETER):].strip('"')
            names.update(n.replace("-", "_") for n in value.split(",") if n)
    return frozenset(names)


def insert_outcome(errno: int, *, joined: bool = False, kernel_denied: bool = False,
                   declined: bool = False) -> LoadOutcome:
    """The outcome of one insert: 0 is inserted (already loaded when another load of the
    same module did it), EEXIST already loaded (failed when `declined`: the module's own
    init returned it), EPERM for a module on the kernel's `module_blacklist=` deny-listed,
    anything else failed."""
    if errno == 0:
        return LoadOutcome.ALREADY_LOADED if joined else LoadOutcome.INSERTED
    if errno == E.EEXIST and not declined:
        return LoadOutcome.ALREADY_LOADED
    if errno == E.EPERM and kernel_denied:
        return LoadOutcome.BLACKLISTED
    return LoadOutcome.FAILED


def log_level(outcome: LoadOutcome, request: Request,
              diagnosis: Outcome | None = None) -> Priority:
    """The priority of an outcome's record (see LOG_LEVELS and MILD_FAILURES)."""
    levels = LOG_LEVELS[outcome]
    if outcome is LoadOutcome.FAILED and diagnosis is not None and diagnosis in MILD_FAILURES:
        levels = MILD_FAILURES[diagnosis]
    elif request is Request.LISTED and outcome in LISTED_LEVELS:
        return LISTED_LEVELS[outcome]
    return levels[0] if request is Request.AUTOLOAD else levels[1]


def message(outcome: LoadOutcome, name: str, key: str = "", *,
            kernel_denied: bool = False) -> str:
    """systemd's sentence for an outcome (without the cause, which the caller appends)."""
    if outcome is LoadOutcome.BLACKLISTED and kernel_denied:
        return KERNEL_DENY_MESSAGE.format(name=name)
    return MESSAGES[outcome].format(name=name, key=key or name)
