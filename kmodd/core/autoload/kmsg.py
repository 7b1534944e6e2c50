"""Records of the kernel log as `/dev/kmsg` hands them out: parse, format, pick a module's lines.

A record is `<prio>,<seq>,<usec>,<flag>[,<more>];<text>\\n`, then zero or more dictionary
lines ` KEY=value\\n` (`kernel/printk/printk.c: info_print_ext_header`, `msg_add_ext_text`).
`prio` is `facility << 3 | level`; the kernel's own lines have facility 0. Bytes below 0x20,
from 0x7f up, and the backslash are written as `\\xNN`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kmodd.core.priority import Priority


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    """One kernel log record, text unescaped."""

    seq: int
    level: Priority
    facility: int
    usec: int
    flag: str  # "-" or "c" (continuation)
    text: str
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def priority(self) -> int:
        return self.facility << 3 | int(self.level)


@dataclass(frozen=True, slots=True)
class KmsgError:
    """A record that does not parse; says what is wrong with which bytes."""

    reason: str
    raw: bytes

    def __str__(self) -> str:
        return f"bad /dev/kmsg record ({self.reason}): {self.raw[:80]!r}"


_HEX = frozenset("0123456789abcdefABCDEF")


def _escape(text: str) -> str:
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if byte < 0x20 or byte >= 0x7F or byte == 0x5C:
            out.append(f"\\x{byte:02x}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _unescape(text: str) -> str:
    if "\\x" not in text:
        return text
    raw = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 3 < n and text[i + 1] == "x":
            digits = text[i + 2:i + 4]
            if all(d in _HEX for d in digits):
                raw.append(int(digits, 16))
                i += 4
                continue
        raw += c.encode("utf-8", "surrogateescape")
        i += 1
    return raw.decode("utf-8", "surrogateescape")


def format_record(record: KmsgRecord) -> bytes:
    """The bytes `/dev/kmsg` returns for `record` (one read() per record)."""
    head = f"{record.priority},{record.seq},{record.usec},{record.flag};"
    lines = [head + _escape(record.text) + "\n"]
    lines += [f" {key}={_escape(value)}\n" for key, value in record.fields]
    return "".join(lines).encode("ascii")


def parse_record(raw: bytes) -> KmsgRecord | KmsgError:
    """Parse one record as read from `/dev/kmsg` (header line plus dictionary lines)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return KmsgError("not ASCII (the kernel escapes every other byte)", raw)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return KmsgError("empty", raw)
    head, sep, message = lines[0].partition(";")
    if not sep:
        return KmsgError("no ';' after the header", raw)
    parts = head.split(",")
    if len(parts) < 4:
        return KmsgError("header has fewer than 4 fields", raw)
    try:
        prio, seq, usec = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return KmsgError("non-numeric header field", raw)
    if prio < 0 or seq < 0 or usec < 0:
        return KmsgError("negative header field", raw)
    flag = parts[3]
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line.startswith(" "):
            return KmsgError("dictionary line does not start with a space", raw)
        key, eq, value = line[1:].partition("=")
        if not eq:
            return KmsgError("dictionary line has no '='", raw)
        fields.append((key, _unescape(value)))
    return KmsgRecord(seq=seq, level=Priority(prio & 7), facility=prio >> 3, usec=usec, flag=flag,
                      text=_unescape(message), fields=tuple(fields))


def split_records(data: bytes) -> list[bytes]:
    """Cut a byte stream of concatenated records (a saved log) into single records."""
    records: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b" ") and records:
            records[-1] += line
        else:
            records.append(line)
    return records


def is_about_module(record: KmsgRecord, name: str) -> bool:
    """True for the kernel's lines about module `name` while loading or unloading it.

    The module loader prefixes almost every line with `<name>: `; the blacklist line is
    `Module <name> is blacklisted`. Names are compared with `-` and `_` equal, as the kernel's
    names always use `_`.
    """
    wanted = name.replace("-", "_")
    text = record.text
    head, sep, _ = text.partition(": ")
    if sep and head.replace("-", "_") == wanted:
        return True
    return text == f"Module {wanted} is blacklisted"


def module_lines(records: Iterable[KmsgRecord], name: str) -> tuple[KmsgRecord, ...]:
    """The records about module `name`, in log order."""
    return tuple(record for record in records if is_about_module(record, name))


def texts(records: Sequence[KmsgRecord]) -> tuple[str, ...]:
    """Just the texts of some records."""
    return tuple(record.text for record in records)
