"""The timeline of module loads, as data: `kmodctl plot` draws it (`cli.plot`) and
`kmodctl critical-chain` walks it. Pure: rows in, rows or text out.

Each module the daemon inserted (or ran an install command for) is a `ModuleRow` made from
its ListModules entry: from `queued_usec` (its chain was asked for) to `started_usec` it
waited, for a worker and for the modules before it in its chain; from `started_usec` to
`finished_usec` it was inside finit_module. `after` is the module of its chain it waited
for last, `device` the device its chain was run for.

The critical chain of a module is, like `systemd-analyze critical-chain` for a unit, the
line of waits that bounded its going live: the module, the module it waited for last, that
one's, ... and the device whose chain it was. Without a module, the chain of the module
that went live last: the one that bounded the coldplug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The first lines of `kmodctl critical-chain`, as systemd-analyze says what @ and + mean.
CHAIN_HEADER = (
    'The time when a module went live (a device: when its uevent was queued) is printed '
    'after the "@" character.\n'
    'The time its insert took (inside finit_module) is printed after the "+" character.\n'
)


def format_usec(usec: int | None) -> str:
    """Like systemd's timespans: 1.520s, 92ms, 713us; "-" when unknown."""
    if usec is None:
        return "-"
    if usec >= 1_000_000:
        return f"{usec / 1_000_000:.3f}s"
    if usec >= 1000:
        return f"{usec // 1000}ms"
    return f"{usec}us"


@dataclass(frozen=True, slots=True)
class ModuleRow:
    """One module's latest timed attempt; times in microseconds since the daemon started."""

    name: str
    queued_usec: int
    started_usec: int
    finished_usec: int
    outcome: str | None = None
    after: str | None = None
    device: str | None = None

    @property
    def waited_usec(self) -> int:
        return self.started_usec - self.queued_usec

    @property
    def took_usec(self) -> int:
        return self.finished_usec - self.started_usec


def module_rows(modules: Sequence[Mapping[str, Any]]) -> list[ModuleRow]:
    """The timed modules of a ListModules reply, in the order they were queued, then
    started (then by name). A module without `queued_usec` is taken as queued when its
    insert started (it waited for nothing known)."""
    rows = []
    for m in modules:
        started, finished = m.get("started_usec"), m.get("finished_usec")
        if started is None or finished is None:
            continue
        queued = m.get("queued_usec")
        rows.append(ModuleRow(
            m["name"], min(int(queued), int(started)) if queued is not None else int(started),
            int(started), int(finished), m.get("outcome"), m.get("after"), m.get("device")))
    rows.sort(key=lambda r: (r.queued_usec, r.started_usec, r.name))
    return rows


@dataclass(frozen=True, slots=True)
class Link:
    """One line of a critical chain: a module (live at `at_usec`, its insert took
    `took_usec`) or the device its chain was for (`took_usec` None, `at_usec` when its uevent
    was queued, None when not known)."""

    name: str
    at_usec: int | None
    took_usec: int | None = None
    device: bool = False


class NotTimed(LookupError):
    """The module asked for has no timed load in the records."""


def critical_chain(rows: Sequence[ModuleRow], device_queued: Mapping[str, int],
                   module: str | None = None) -> list[Link]:
    """The chain that bounded `module`'s going live (default: the module that went live
    last), the module first, the device last. `device_queued`: devpath -> when its uevent
    was queued. Empty when no module is timed; NotTimed when `module` is not."""
    by_name = {r.name: r for r in rows}
    if module is not None:
        row = by_name.get(module.replace("-", "_"))
        if row is None:
            raise NotTimed(module)
    elif rows:
        row = max(rows, key=lambda r: (r.finished_usec, r.name))
    else:
        return []
    links: list[Link] = []
    seen: set[str] = set()
    while True:
        seen.add(row.name)
        links.append(Link(row.name, row.finished_usec, row.took_usec))
        before = by_name.get(row.after) if row.after is not None else None
        if before is None or before.name in seen:
            break
        row = before
    if row.device is not None:
        links.append(Link(row.device, device_queued.get(row.device), device=True))
    return links


def render_chain(links: Sequence[Link]) -> str:
    """`kmodctl critical-chain`'s text: the header, a blank line, then each link indented
    under the one that waited for it, as systemd-analyze prints units."""
    lines = []
    for depth, link in enumerate(links):
        text = link.name
        if link.at_usec is not None:
            text += f" @{format_usec(link.at_usec)}"
        if link.took_usec is not None:
            text += f" +{format_usec(link.took_usec)}"
        lines.append(text if depth == 0 else "  " * (depth - 1) + "└─" + text)
    return CHAIN_HEADER + "\n" + "".join(line + "\n" for line in lines)
