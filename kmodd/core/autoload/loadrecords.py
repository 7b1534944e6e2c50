"""The crash-safe record of what kmodd did to the kernel during this boot.

A kmodd killed in the middle of coldplug cannot tell the journal about the loads it had
started: their finit_module calls return (and their outcomes would be logged) seconds after
the modules went live. So every instance appends one line to a record file before each insert
and one after it, and the next instance of the same boot reads the file at start: it then
knows which live modules the previous instance loaded (or was loading when it ended), for
which devices, whether that instance stopped or just ended, and which devices were unbound
while kmodd watched (those are left alone by the re-probe, `core.autoload.reprobe`).

One line per record, fields separated by tabs, the kind first and the writer's pid second:

    start    PID  BOOT_ID  TIME     an instance started (TIME: seconds since the epoch)
    carried  PID  MODULE   DEVPATH  a module an earlier instance PID loaded, still live
    insert   PID  MODULE   DEVPATH  an insert is about to start (DEVPATH "-": none)
    done     PID  MODULE   ERRNO    the insert returned (0: loaded)
    removed  PID  MODULE            kmodd removed the module
    unbound  PID  DEVPATH           the kernel said the device lost its driver
    bound    PID  DEVPATH  DRIVER   the kernel said the device got a driver
    reprobe  PID  DEVPATH  RESULT   a re-probe of the device ended (RESULT: an outcome word)
    stop     PID                    the instance stopped in order

Tabs, newlines and backslashes in a field are written as `\\t`, `\\n` and `\\\\`. Records of
another boot (an earlier `start` with another boot id) are ignored. A line that cannot be read
(the last one of a killed writer may be cut short) is reported with its number and skipped.
This module only formats and reads; `system.loadrecords` owns the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

#: DEVPATH when an insert is for no device (a client's load).
NO_DEVICE = "-"


class Kind(StrEnum):
    START = "start"
    CARRIED = "carried"
    INSERT = "insert"
    DONE = "done"
    REMOVED = "removed"
    UNBOUND = "unbound"
    BOUND = "bound"
    REPROBE = "reprobe"
    STOP = "stop"


#: Fields after the pid, per kind.
ARITY: Mapping[Kind, int] = {
    Kind.START: 2, Kind.CARRIED: 2, Kind.INSERT: 2, Kind.DONE: 2, Kind.REMOVED: 1,
    Kind.UNBOUND: 1, Kind.BOUND: 2, Kind.REPROBE: 2, Kind.STOP: 0,
}

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n"}


def escape(value: str) -> str:
    if "\\" not in value and "\t" not in value and "\n" not in value:
        return value
    return "".join(_ESCAPES.get(c, c) for c in value)


def unescape(value: str) -> str | None:
    """The field's text, or None when an escape is broken."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, None)
        if nxt is None or nxt not in _UNESCAPES:
            return None
        out.append(_UNESCAPES[nxt])
    return "".join(out)


def line(kind: Kind, pid: int, *fields: str) -> bytes:
    """One record, newline included."""
    if len(fields) != ARITY[kind]:
        raise ValueError(f"a {kind} record has {ARITY[kind]} fields after the pid")
    return "\t".join((kind.value, str(pid), *(escape(f) for f in fields))).encode(
        "utf-8", "surrogateescape") + b"\n"


class LoadedBy(StrEnum):
    """Who loaded a live module, as far as kmodd knows."""

    KMODD = "kmodd"  # this instance
    PREVIOUS_INSTANCE = "previous-instance"  # an earlier kmodd of this boot (the record says)
    BEFORE_START = "before-start"  # live when this instance started, not in the record
    NOT_KMODD = "not-kmodd"  # went live while this instance ran, not by its insert
    KERNEL_REQUEST = "kernel-request"  # the kernel's request_module (a trace says which)
    INITRAMFS = "initramfs"  # before the switch to the real root (the boot's trace says)


@dataclass(frozen=True, slots=True)
class Record:
    kind: Kind
    pid: int
    fields: tuple[str, ...]


def parse(data: bytes, name: str) -> tuple[list[Record], list[str]]:
    """The records of a file's bytes, and a problem per line that cannot be read
    (`NAME:LINE: reason`). A last line without its newline was cut short by a kill."""
    records: list[Record] = []
    problems: list[str] = []
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    complete = lines[:-1]
    if lines[-1]:
        problems.append(f"{name}:{len(lines)}: the last record was cut short, ignoring")
    for number, raw in enumerate(complete, 1):
        if not raw:
            continue
        parts = raw.split("\t")
        try:
            kind = Kind(parts[0])
        except ValueError:
            problems.append(f"{name}:{number}: unknown record kind {parts[0][:40]!r}, ignoring")
            continue
        if len(parts) != 2 + ARITY[kind]:
            problems.append(f"{name}:{number}: a {kind} record needs {ARITY[kind] + 2} fields, "
                            f"it has {len(parts)}, ignoring")
            continue
        if not parts[1].isdigit() or len(parts[1]) > 10:
            problems.append(f"{name}:{number}: the pid {parts[1][:20]!r} is not a number, "
                            "ignoring")
            continue
        fields = tuple(unescape(p) for p in parts[2:])
        if any(f is None for f in fields):
            problems.append(f"{name}:{number}: a broken escape, ignoring")
            continue
        records.append(Record(kind, int(parts[1]), tuple(f for f in fields if f is not None)))
    return records, problems


@dataclass(frozen=True, slots=True)
class Loaded:
    """A module an instance inserted (or was inserting when it ended)."""

    module: str
    pid: int
    devpaths: tuple[str, ...]
    returned: bool  # its insert returned 0; False: it had not returned when the record ends


@dataclass(frozen=True, slots=True)
class Instance:
    pid: int
    started: float  # seconds since the epoch
    stopped: bool  # a `stop` record: it stopped in order


@dataclass(frozen=True, slots=True)
class History:
    """What the record says about this boot before the reading instance started."""

    instances: tuple[Instance, ...] = ()
    loaded: Mapping[str, Loaded] = field(default_factory=dict)
    unbound: frozenset[str] = frozenset()  # devpaths whose driver went away while watched
    problems: tuple[str, ...] = ()

    @property
    def previous(self) -> Instance | None:
        return self.instances[-1] if self.instances else None


def summarize(records: Iterable[Record], boot_id: str,
              problems: Iterable[str] = ()) -> History:
    """The history of this boot (`boot_id`) in `records`; records of another boot count
    for nothing."""
    instances: list[Instance] = []
    loaded: dict[str, Loaded] = {}
    inserting: dict[tuple[int, str], list[str]] = {}
    unbound: set[str] = set()
    this_boot = False
    for r in records:
        if r.kind is Kind.START:
            this_boot = r.fields[0] == boot_id
            if this_boot:
                try:
                    started = float(r.fields[1])
                except ValueError:
                    started = 0.0
                instances.append(Instance(r.pid, started, False))
            continue
        if not this_boot:
            continue
        match r.kind:
            case Kind.CARRIED:
                module, devpath = r.fields
                known = loaded.get(module)
                devs = known.devpaths if known is not None and known.pid == r.pid else ()
                if devpath != NO_DEVICE and devpath not in devs:
                    devs = (*devs, devpath)
                loaded[module] = Loaded(module, r.pid, devs, True)
            case Kind.INSERT:
                module, devpath = r.fields
                devs_list = inserting.setdefault((r.pid, module), [])
                if devpath != NO_DEVICE and devpath not in devs_list:
                    devs_list.append(devpath)
                loaded[module] = Loaded(module, r.pid, tuple(devs_list), False)
            case Kind.DONE:
                module, errno = r.fields
                devs_list = inserting.pop((r.pid, module), [])
                if errno == "0":
                    loaded[module] = Loaded(module, r.pid, tuple(devs_list), True)
                else:
                    known = loaded.get(module)
                    if known is not None and known.pid == r.pid and not known.returned:
                        del loaded[module]
            case Kind.REMOVED:
                loaded.pop(r.fields[0], None)
            case Kind.UNBOUND:
                unbound.add(r.fields[0])
            case Kind.BOUND:
                unbound.discard(r.fields[0])
            case Kind.STOP:
                if instances and instances[-1].pid == r.pid:
                    last = instances[-1]
                    instances[-1] = Instance(last.pid, last.started, True)
            case _:
                pass
    return History(tuple(instances), loaded, frozenset(unbound), tuple(problems))


def carried_lines(pid: int, boot_id: str, started: float, loaded: Iterable[Loaded],
                  unbound: Iterable[str]) -> bytes:
    """A fresh record for instance `pid`: its start, then what it carries over (the modules
    earlier instances loaded that are live, the devices unbound while watched)."""
    out = [line(Kind.START, pid, boot_id, f"{started:.6f}")]
    for entry in loaded:
        for devpath in entry.devpaths or (NO_DEVICE,):
            out.append(line(Kind.CARRIED, entry.pid, entry.module, devpath))
    for devpath in sorted(unbound):
        out.append(line(Kind.UNBOUND, pid, devpath))
    return b"".join(out)
