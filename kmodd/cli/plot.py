"""`kmodctl plot`'s picture: rows in, SVG text out (pure).

One row per module (`module_plot`): a thin bar while it waited (from when its chain was
asked for until its insert started: for a worker, for its dependencies) and a thick bar
while it was inside finit_module, coloured by outcome; the modules of the critical chain
are drawn with a red outline and a bold label. `--by-device` draws one row per device
instead (`device_plot`): waiting in the queue, then loading its modules.

Readable whatever the data: the time axis has round ticks (1, 2 or 5 times a power of ten,
at most MAX_TICKS of them, spelled "0, 200 ms, 400 ms" or "0, 0.5 s, 1 s"); each row is
ROW_HEIGHT tall, more than a label's line; a label longer than MAX_LABEL_CHARS is cut with
"…" (the whole name is in the row's tooltip), and the label column is as wide as the
longest label at CHAR_WIDTH per character, so labels never reach the bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from kmodd.cli.timeline import ModuleRow, format_usec

#: Layout, in SVG user units (pixels).
FONT_SIZE = 11
#: The widest a character of FONT_SIZE sans-serif is taken to be, for the label column.
CHAR_WIDTH = 7
MAX_LABEL_CHARS = 48
ROW_HEIGHT = 20
TIMELINE_WIDTH = 900
MARGIN = 20
MAX_TICKS = 10
HEADER_HEIGHT = 80  # title, legend, tick labels
WAIT_COLOUR = "#c8d6e5"
CRITICAL_COLOUR = "#d0021b"
#: Bar colour per outcome; anything else is grey.
COLOURS: Mapping[str, str] = {
    "inserted": "#4c9a2a", "command-ran": "#2e86c1", "already-loaded": "#8fbc8f",
    "builtin": "#8fbc8f", "failed": "#c0392b", "blacklisted": "#e67e22",
    "not-found": "#7f8c8d",
}
OTHER_COLOUR = "#999999"


@dataclass(frozen=True, slots=True)
class PlotRow:
    """One row: its label, a tooltip, the wait (from `queued_usec` to `started_usec`) and the
    work (to `finished_usec`), coloured by `outcome`; `critical`: on the critical chain."""

    label: str
    tooltip: str
    queued_usec: int
    started_usec: int
    finished_usec: int
    outcome: str | None = None
    critical: bool = False


def tick_step(span_usec: int, max_ticks: int = MAX_TICKS) -> int:
    """The smallest step of 1, 2 or 5 times a power of ten (in microseconds, at least 1)
    that covers `span_usec` in at most `max_ticks` steps."""
    magnitude = 1
    while True:
        for mult in (1, 2, 5):
            step = mult * magnitude
            if math.ceil(max(span_usec, 1) / step) <= max_ticks:
                return step
        magnitude *= 10


#: The units of the axis, largest first.
UNITS: tuple[tuple[str, int], ...] = (("s", 1_000_000), ("ms", 1000), ("us", 1))


def tick_label(value_usec: int, end_usec: int) -> str:
    """A tick's text: "0", else in the largest unit the axis' last tick (`end_usec`) reaches
    one of, with as many decimals as the value needs: 0, 0.5 s, 1 s; 0, 200 ms, 400 ms."""
    if value_usec == 0:
        return "0"
    unit, size = next((u for u in UNITS if end_usec >= u[1]), UNITS[-1])
    decimals = 0
    while value_usec * 10**decimals % size:
        decimals += 1
    return f"{value_usec / size:.{decimals}f} {unit}"


def ticks(span_usec: int) -> list[tuple[int, str]]:
    """The axis: (microseconds from the start, label) from 0 to the first tick at or past
    the span."""
    step = tick_step(span_usec)
    count = max(math.ceil(span_usec / step), 1)
    return [(i * step, tick_label(i * step, count * step)) for i in range(count + 1)]


def _cut(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[:MAX_LABEL_CHARS - 1] + "…"


def plot_svg(rows: Sequence[PlotRow], title: str,
             legend: Sequence[tuple[str, str]]) -> str:
    """The SVG of `rows`, top to bottom, under `title` and the `legend` ((colour, text)
    swatches; a colour of "critical" is drawn as the critical chain's outline)."""
    start = min((r.queued_usec for r in rows), default=0)
    end = max((r.finished_usec for r in rows), default=start)
    axis = ticks(end - start)
    scale = TIMELINE_WIDTH / axis[-1][0]
    label_width = max((len(_cut(r.label)) for r in rows), default=0) * CHAR_WIDTH + MARGIN
    x0 = MARGIN + label_width
    height = HEADER_HEIGHT + ROW_HEIGHT * len(rows) + MARGIN
    width = x0 + TIMELINE_WIDTH + 2 * MARGIN
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="{FONT_SIZE}">',
        f'<text class="title" x="{MARGIN}" y="{MARGIN}" font-size="14">{escape(title)}</text>',
        '<g class="legend">',
    ]
    x = MARGIN
    for colour, text in legend:
        if colour == "critical":
            swatch = (f'fill="{COLOURS["inserted"]}" stroke="{CRITICAL_COLOUR}" '
                      f'stroke-width="2"')
        else:
            swatch = f'fill="{colour}"'
        out.append(f'<rect x="{x}" y="{MARGIN + 12}" width="14" height="10" {swatch}/>')
        out.append(f'<text x="{x + 20}" y="{MARGIN + 21}">{escape(text)}</text>')
        x += 20 + len(text) * CHAR_WIDTH + MARGIN
    out.append("</g>")
    top, bottom = HEADER_HEIGHT - 6, height - MARGIN
    out.append('<g class="axis">')
    for usec, label in axis:
        tx = x0 + usec * scale
        out.append(f'<line x1="{tx:.2f}" y1="{top}" x2="{tx:.2f}" y2="{bottom}" '
                   f'stroke="#dddddd"/>')
        out.append(f'<text class="tick" x="{tx:.2f}" y="{top - 4}" '
                   f'text-anchor="middle">{escape(label)}</text>')
    out.append("</g>")
    for i, r in enumerate(rows):
        y = HEADER_HEIGHT + i * ROW_HEIGHT
        wait_x = x0 + (r.queued_usec - start) * scale
        run_x = x0 + (r.started_usec - start) * scale
        run_w = max((r.finished_usec - r.started_usec) * scale, 1.0)
        critical = ' font-weight="bold"' if r.critical else ""
        outline = (f' stroke="{CRITICAL_COLOUR}" stroke-width="2"' if r.critical else "")
        out.append(f'<g class="row{" critical" if r.critical else ""}" '
                   f'data-label={quoteattr(r.label)}><title>{escape(r.tooltip)}</title>')
        out.append(f'<text class="label" x="{MARGIN}" y="{y + 14}"{critical}>'
                   f'{escape(_cut(r.label))}</text>')
        if r.started_usec > r.queued_usec:
            out.append(f'<rect class="wait" x="{wait_x:.2f}" y="{y + 7}" '
                       f'width="{run_x - wait_x:.2f}" height="6" fill="{WAIT_COLOUR}"/>')
        out.append(f'<rect class="run" x="{run_x:.2f}" y="{y + 3}" width="{run_w:.2f}" '
                   f'height="14" fill="{COLOURS.get(r.outcome or "", OTHER_COLOUR)}"'
                   f'{outline}/>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


#: The legend of the per-module view.
MODULE_LEGEND: tuple[tuple[str, str], ...] = (
    (WAIT_COLOUR, "waiting (queued, dependencies)"),
    (COLOURS["inserted"], "inside finit_module"),
    (COLOURS["command-ran"], "install command"),
    (COLOURS["failed"], "failed"),
    ("critical", "critical chain"),
)
#: The legend of the per-device view.
DEVICE_LEGEND: tuple[tuple[str, str], ...] = (
    (WAIT_COLOUR, "queued"),
    (COLOURS["inserted"], "loading its modules"),
    (COLOURS["failed"], "a load failed"),
)


def module_plot(rows: Sequence[ModuleRow], critical: frozenset[str] = frozenset()) -> str:
    """One row per module, in `rows`' order; the modules named in `critical` highlighted."""
    span = (max(r.finished_usec for r in rows) - min(r.queued_usec for r in rows)
            if rows else 0)
    plot_rows = [PlotRow(
        r.name,
        f"{r.name}: waited {format_usec(r.waited_usec)}"
        + (f" (after {r.after})" if r.after else "")
        + f", inside finit_module {format_usec(r.took_usec)}"
        + (f"; for {r.device}" if r.device else ""),
        r.queued_usec, r.started_usec, r.finished_usec, r.outcome, r.name in critical)
        for r in rows]
    return plot_svg(plot_rows, f"kmodd module loads: {len(rows)} modules, "
                    f"{format_usec(span)}", MODULE_LEGEND)


def device_plot(devices: Sequence[Mapping[str, Any]]) -> str:
    """One row per timed device of a ListDevices reply: queued, then loading its modules."""
    rows = []
    for d in devices:
        started, finished = d.get("started_usec"), d.get("finished_usec")
        if started is None or finished is None:
            continue
        queued = d.get("queued_usec")
        modules = ",".join(d.get("candidates") or []) or "-"
        label = f"{d['devpath']} ({modules})"
        rows.append(PlotRow(
            label, f"{label}: {format_usec(int(finished) - int(started))}",
            min(int(queued), int(started)) if queued is not None else int(started),
            int(started), int(finished), d.get("outcome")))
    rows.sort(key=lambda r: (r.queued_usec, r.started_usec, r.label))
    span = (max(r.finished_usec for r in rows) - min(r.queued_usec for r in rows)
            if rows else 0)
    return plot_svg(rows, f"kmodd coldplug: {len(rows)} devices, {format_usec(span)}",
                    DEVICE_LEGEND)
