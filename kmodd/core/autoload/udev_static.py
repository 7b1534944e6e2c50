"""The module loads that Debian 12's udev rules make besides `kmod load $MODALIAS`, as a table.

kmodd replaces udev's module loading, so it must also load what these rules load
(`/lib/udev/rules.d/80-drivers.rules` and `80-debian-compat.rules` of udev 252.39-1~deb12u2).
`tests/core/test_udev_static.py` re-reads the real rules files and checks that every
`RUN{builtin}+="kmod load ..."` rule there is a row here with the same matches.

udev's matching, as these rows need it: `SUBSYSTEM` and `KERNEL` (the devpath's last
component) are shell globs (fnmatch(3), as `core.kmod.glob` matches them; each pattern of the
table is compiled once, since the rules are tried for every uevent), `ENV{KEY}` compares a
uevent variable (a missing one is empty), and `TEST!="[module/sg]"` is true when
`/sys/module/sg` does not exist. 80-drivers.rules opens with `ACTION!="add",
GOTO="drivers_end"`; 80-debian-compat.rules has no such guard, so its `sg` row applies to
every action, as it does under udev.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.core.kmod.glob import Matcher, compile_pattern

#: The rules files the table was taken from, in the order udev reads them.
RULES_FILES = ("80-debian-compat.rules", "80-drivers.rules")


@dataclass(frozen=True, slots=True)
class StaticLoad:
    """One udev rule that loads modules: its matches and the modules (empty: the MODALIAS)."""

    source: str
    modules: tuple[str, ...]
    add_only: bool = True
    subsystem: str | None = None
    kernel: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    unless_loaded: str | None = None
    needs_modalias: bool = False


#: Every module-loading rule of Debian 12's udev, in file and line order.
STATIC_LOADS: tuple[StaticLoad, ...] = (
    StaticLoad(
        "80-debian-compat.rules:4",
        ("sg",),
        add_only=False,
        subsystem="scsi",
        env=(("DEVTYPE", "scsi_device"),),
        unless_loaded="sg",
    ),
    StaticLoad("80-drivers.rules:5", (), needs_modalias=True),
    StaticLoad(
        "80-drivers.rules:6", ("tifm_sd",), subsystem="tifm", env=(("TIFM_CARD_TYPE", "SD"),)
    ),
    StaticLoad(
        "80-drivers.rules:7", ("tifm_ms",), subsystem="tifm", env=(("TIFM_CARD_TYPE", "MS"),)
    ),
    StaticLoad("80-drivers.rules:8", ("ms_block", "mspro_block"), subsystem="memstick"),
    StaticLoad("80-drivers.rules:9", ("i2o_block",), subsystem="i2o"),
    StaticLoad("80-drivers.rules:10", ("ppdev",), subsystem="module", kernel="parport_pc"),
    StaticLoad(
        "80-drivers.rules:11", ("sm_ftl",), kernel="mtd*ro", env=(("MTD_FTL", "smartmedia"),)
    ),
)


#: The table's patterns, compiled (the table is fixed, so this stays small).
_compiled: dict[str, Matcher] = {}


def _glob(pattern: str, string: str) -> bool:
    matcher = _compiled.get(pattern)
    if matcher is None:
        matcher = _compiled[pattern] = compile_pattern(pattern)
    return matcher(string)


def rule_matches(rule: StaticLoad, event: Uevent, is_loaded: Callable[[str], bool]) -> bool:
    """Whether udev would run `rule`'s `kmod load` for `event`."""
    if rule.add_only and event.action is not Action.ADD:
        return False
    if rule.needs_modalias and not event.modalias:
        return False
    if rule.subsystem is not None and not _glob(rule.subsystem, event.subsystem):
        return False
    if rule.kernel is not None and not _glob(rule.kernel, event.sysname):
        return False
    for key, value in rule.env:
        if not _glob(value, event.env.get(key, "")):
            return False
    return rule.unless_loaded is None or not is_loaded(rule.unless_loaded)


def static_loads(event: Uevent, is_loaded: Callable[[str], bool]) -> tuple[str, ...]:
    """Module names that the static rules load for `event`, in rule order, without repeats.

    The MODALIAS rule is not included here: the daemon resolves the modalias itself.
    """
    names: list[str] = []
    for rule in _rules_for(event.subsystem):
        if rule_matches(rule, event, is_loaded):
            names.extend(m for m in rule.modules if m not in names)
    return tuple(names)


#: Subsystems a rule is known to be tried for (kept while there are at most this many).
_BY_SUBSYSTEM_MAX = 256
_by_subsystem: dict[str, tuple[StaticLoad, ...]] = {}


def _rules_for(subsystem: str) -> tuple[StaticLoad, ...]:
    """The rules that name modules and whose SUBSYSTEM match can hold for `subsystem`, in
    order: most events (every PCI, USB, input... device) have none to try."""
    rules = _by_subsystem.get(subsystem)
    if rules is None:
        rules = tuple(r for r in STATIC_LOADS if r.modules and (
            r.subsystem is None or _glob(r.subsystem, subsystem)))
        if len(_by_subsystem) < _BY_SUBSYSTEM_MAX:
            _by_subsystem[subsystem] = rules
    return rules
