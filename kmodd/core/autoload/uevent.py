"""Kernel uevent datagrams: bytes from NETLINK_KOBJECT_UEVENT in, a `Uevent` or a `UeventError` out.

The kernel (`lib/kobject_uevent.c`) sends one datagram per event:

    ACTION@DEVPATH \\0 ACTION=add \\0 DEVPATH=... \\0 SUBSYSTEM=... \\0 ... SEQNUM=N \\0

`parse_uevent` checks that shape and the named limits below and returns either a frozen
`Uevent` or a `UeventError` naming the defect, the byte offset and the variable. It never
raises on any input.

Decided rules (the kernel never produces these; a sender that does is not the kernel):

* The datagram must end with NUL; every variable is `KEY=VALUE` with a non-empty key made of
  printable ASCII without `=`; a key may appear once; an empty variable (`\\0\\0`) is an error.
* `ACTION`, `DEVPATH`, `SUBSYSTEM` and `SEQNUM` must be present (the kernel always adds them),
  `ACTION`/`DEVPATH` must agree with the header, `SEQNUM` is a decimal number and the action
  one of the kernel's `kobject_action` names.
* Bytes that are not UTF-8 are kept as `\\xNN` escapes (Python's `backslashreplace`), so every
  string is printable and safe for JSON and the journal and the event is not lost: everything
  kmodd acts on (action, devpath, subsystem, modalias, seqnum) is ASCII when the kernel builds
  it, and a stray byte in, say, a network interface name must not cost a device its driver.
  `Uevent.escaped` says that this happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import methodcaller
from types import MappingProxyType

#: Largest datagram accepted, in bytes (the kernel's 2048-byte variable buffer plus a
#: header that holds a devpath; mdevd uses the same 8192).
MAX_UEVENT_BYTES = 8192
#: Most variables in one uevent (the kernel's UEVENT_NUM_ENVP).
MAX_VARIABLES = 64
#: Longest value of one variable, in characters (the kernel's
#: UEVENT_BUFFER_SIZE holds all variables together).
MAX_VALUE_LENGTH = 2048
#: Variables the kernel adds to every uevent it broadcasts.
REQUIRED_KEYS = ("ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM")
_REQUIRED = frozenset(REQUIRED_KEYS)


class Action(StrEnum):
    """The kernel's `kobject_action` names (`lib/kobject_uevent.c: kobject_actions`)."""

    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"
    MOVE = "move"
    ONLINE = "online"
    OFFLINE = "offline"
    BIND = "bind"
    UNBIND = "unbind"


_ACTIONS: Mapping[str, Action] = {a.value: a for a in Action}


class UeventDefect(StrEnum):
    """Every way a datagram can fail to be a kernel uevent."""

    EMPTY = "empty"
    TOO_LARGE = "too-large"
    NOT_TERMINATED = "not-nul-terminated"
    BAD_HEADER = "bad-header"
    EMPTY_VARIABLE = "empty-variable"
    NO_EQUALS = "variable-without-equals"
    BAD_KEY = "bad-key"
    DUPLICATE_KEY = "duplicate-key"
    TOO_MANY_VARIABLES = "too-many-variables"
    VALUE_TOO_LONG = "value-too-long"
    MISSING_KEY = "missing-key"
    HEADER_MISMATCH = "header-mismatch"
    BAD_SEQNUM = "bad-seqnum"
    UNKNOWN_ACTION = "unknown-action"


@dataclass(frozen=True, slots=True)
class UeventError:
    """Why a datagram was rejected: the defect, where (byte offset, variable index) and detail.

    `variable` counts the `KEY=VALUE` parts from 1; 0 means the header or the whole datagram.
    """

    defect: UeventDefect
    offset: int
    variable: int = 0
    detail: str = ""

    @property
    def message(self) -> str:
        where = f"offset {self.offset}"
        if self.variable:
            where += f", variable {self.variable}"
        text = f"malformed uevent ({self.defect.value} at {where})"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True, slots=True)
class Uevent:
    """One kernel uevent. `env` holds every variable, the four named ones included."""

    action: Action
    devpath: str
    subsystem: str
    seqnum: int
    env: Mapping[str, str] = field(hash=False)
    escaped: bool = False

    @property
    def modalias(self) -> str | None:
        """`MODALIAS`, or None when absent or empty (udev's `ENV{MODALIAS}=="?*"`)."""
        return self.env.get("MODALIAS") or None

    @property
    def devtype(self) -> str | None:
        """`DEVTYPE` (e.g. `scsi_device`, `usb_interface`), if the kernel sent one."""
        return self.env.get("DEVTYPE")

    @property
    def driver(self) -> str | None:
        """`DRIVER`: the driver already bound to the device, if any."""
        return self.env.get("DRIVER")

    @property
    def sysname(self) -> str:
        """The last devpath component (udev's `KERNEL`)."""
        return self.devpath.rpartition("/")[2]


def _offset_of(data: bytes, part: int) -> int:
    """Byte offset where NUL-separated part number `part` (0 = header) starts."""
    offset = 0
    for _ in range(part):
        nul = data.find(b"\0", offset)
        if nul < 0:
            return len(data)
        offset = nul + 1
    return offset


def _key_is_valid(key: str) -> bool:
    return bool(key) and key.isascii() and key.isprintable() and " " not in key


_split_variable = methodcaller("split", "=", 1)
#: Keys already seen to be valid. Kernel uevents use a few dozen names, so checking a new
#: event's keys is one C-level subset test; the memo is bounded so a flood of made-up names
#: cannot grow it.
_KNOWN_KEYS: set[str] = set()
_KNOWN_KEYS_LIMIT = 4096


def _learn_keys(env: Mapping[str, str]) -> bool:
    """Whether all keys are valid; valid ones are remembered while the memo has room."""
    if not all(map(_key_is_valid, env)):
        return False
    if len(_KNOWN_KEYS) < _KNOWN_KEYS_LIMIT:
        _KNOWN_KEYS.update(env)
    return True


def parse_uevent(data: bytes) -> Uevent | UeventError:
    """Parse one kernel uevent datagram; never raises.

    Returns a `Uevent`, or a `UeventError` for the first defect found (see the module's rules).
    """
    size = len(data)
    if size == 0:
        return UeventError(UeventDefect.EMPTY, 0)
    if size > MAX_UEVENT_BYTES:
        return UeventError(
            UeventDefect.TOO_LARGE, MAX_UEVENT_BYTES, detail=f"{size} bytes > {MAX_UEVENT_BYTES}"
        )
    if data[-1] != 0:
        return UeventError(UeventDefect.NOT_TERMINATED, size)
    escaped = False
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = data.decode(errors="backslashreplace")
        escaped = True
    parts = text.split("\0")
    parts.pop()  # the empty string after the final NUL
    header = parts[0]
    at = header.find("@/")
    if at <= 0:
        return UeventError(UeventDefect.BAD_HEADER, 0, detail="no ACTION@/DEVPATH header")
    count = len(parts) - 1
    if count > MAX_VARIABLES:
        return UeventError(
            UeventDefect.TOO_MANY_VARIABLES,
            _offset_of(data, MAX_VARIABLES + 1),
            MAX_VARIABLES + 1,
            f"{count} variables > {MAX_VARIABLES}",
        )
    # Fast path: every step below runs in C (map, dict, set operations), with no Python-level
    # loop per variable; only when a check fails does `_first_defect` walk the variables to
    # name the first bad one. dict() refuses a part without "=" (a 1-item split).
    try:
        env = dict(map(_split_variable, parts[1:]))
    except ValueError:
        return _first_defect(data, parts)
    if (
        len(env) != count
        or (not _KNOWN_KEYS.issuperset(env) and not _learn_keys(env))
        or (count and max(map(len, env.values())) > MAX_VALUE_LENGTH)
    ):
        return _first_defect(data, parts)
    return _check(data, header, at, env, escaped)


def _first_defect(data: bytes, parts: list[str]) -> UeventError:
    """Walk the variables in order and describe the first one that breaks a rule."""
    seen: set[str] = set()
    for index in range(1, len(parts)):
        part = parts[index]
        key, sep, value = part.partition("=")
        if not sep:
            defect = UeventDefect.NO_EQUALS if part else UeventDefect.EMPTY_VARIABLE
            return UeventError(defect, _offset_of(data, index), index, repr(part[:64]))
        if not _key_is_valid(key):
            return UeventError(UeventDefect.BAD_KEY, _offset_of(data, index), index, repr(key[:64]))
        if key in seen:
            return UeventError(UeventDefect.DUPLICATE_KEY, _offset_of(data, index), index, key)
        if len(value) > MAX_VALUE_LENGTH:
            return UeventError(
                UeventDefect.VALUE_TOO_LONG,
                _offset_of(data, index),
                index,
                f"{key}: {len(value)} > {MAX_VALUE_LENGTH}",
            )
        seen.add(key)
    raise AssertionError("_first_defect called on a well-formed uevent")  # a bug, not input


def _check(
    data: bytes, header: str, at: int, env: dict[str, str], escaped: bool
) -> Uevent | UeventError:
    if not _REQUIRED.issubset(env):
        missing = next(key for key in REQUIRED_KEYS if key not in env)
        return UeventError(UeventDefect.MISSING_KEY, len(data), detail=missing)
    action_text = env["ACTION"]
    devpath = env["DEVPATH"]
    if header[:at] != action_text or header[at + 1 :] != devpath:
        return UeventError(
            UeventDefect.HEADER_MISMATCH,
            0,
            detail=f"header {header[:128]!r} vs ACTION={action_text!r} DEVPATH={devpath[:128]!r}",
        )
    action = _ACTIONS.get(action_text)
    if action is None:
        return UeventError(UeventDefect.UNKNOWN_ACTION, 0, detail=repr(action_text[:64]))
    seqnum_text = env["SEQNUM"]
    if not (seqnum_text.isascii() and seqnum_text.isdigit()) or len(seqnum_text) > 20:
        index = list(env).index("SEQNUM") + 1
        return UeventError(
            UeventDefect.BAD_SEQNUM, _offset_of(data, index), index, repr(seqnum_text[:64])
        )
    return Uevent(
        action=action,
        devpath=devpath,
        subsystem=env["SUBSYSTEM"],
        seqnum=int(seqnum_text),
        env=MappingProxyType(env),
        escaped=escaped,
    )


def format_uevent(event: Uevent) -> bytes:
    """The datagram the kernel would send for `event` (the inverse of `parse_uevent`)."""
    parts = [f"{event.action.value}@{event.devpath}"]
    parts.extend(f"{k}={v}" for k, v in event.env.items())
    return ("\0".join(parts) + "\0").encode()


def udev_database_id(subsystem: str, sysname: str, env: Mapping[str, str]) -> str:
    """The name of a device's file in udev's database (`/run/udev/data/`), as libudev forms
    it: `c`/`b` MAJOR:MINOR for a device node, `n` IFINDEX for a network interface, else
    `+` SUBSYSTEM `:` SYSNAME."""
    major, minor = env.get("MAJOR", ""), env.get("MINOR", "")
    if major.isdigit() and minor.isdigit() and int(major) > 0:
        return f"{'b' if subsystem == 'block' else 'c'}{major}:{minor}"
    ifindex = env.get("IFINDEX", "")
    if ifindex.isdigit() and int(ifindex) > 0:
        return f"n{ifindex}"
    return f"+{subsystem}:{sysname}"


def udev_database_properties(text: str) -> dict[str, str]:
    """The properties (`E:KEY=VALUE` lines) of a udev database file; other lines (links,
    tags, the initialisation time) and lines that are not `KEY=VALUE` are skipped."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("E:"):
            key, sep, value = line[2:].partition("=")
            if sep and key:
                props[key] = value
    return props
