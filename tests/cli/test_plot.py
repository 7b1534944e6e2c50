"""`kmodctl plot`'s SVG (kmodd.cli.plot): one row per module, the wait apart from the time
inside finit_module, a legend, round ticks in order, and labels that never overlap."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from kmodd.cli.plot import (
    CHAR_WIDTH,
    FONT_SIZE,
    MARGIN,
    MAX_LABEL_CHARS,
    TIMELINE_WIDTH,
    device_plot,
    module_plot,
    tick_step,
    ticks,
)
from kmodd.cli.timeline import ModuleRow

NS = {"s": "http://www.w3.org/2000/svg"}
NIC = "/devices/pci0000:00/0000:00:03.0/virtio2"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode())


def rows_of(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.findall("s:g", NS) if (g.get("class") or "").startswith("row")]


def one(element: ET.Element, path: str) -> ET.Element:
    found = element.find(path, NS)
    assert found is not None, path
    return found


#: Over 1 s (ten 100 ms ticks, 900 px): 0.9 px per millisecond.
ROWS = [
    ModuleRow("virtio_pci", 0, 200_000, 500_000, "inserted", None, NIC),
    ModuleRow("virtio_net", 0, 500_000, 1_000_000, "inserted", "virtio_pci", NIC),
    ModuleRow("pcspkr", 100_000, 100_000, 150_000, "failed", None, "/devices/platform/pcspkr"),
]


def test_one_row_per_module_labelled_with_its_name_in_the_given_order() -> None:
    root = parse(module_plot(ROWS))
    assert [(g.get("data-label"), one(g, "s:text[@class='label']").text)
            for g in rows_of(root)] == [
        ("virtio_pci", "virtio_pci"), ("virtio_net", "virtio_net"), ("pcspkr", "pcspkr")]
    assert one(root, "s:text[@class='title']").text == "kmodd module loads: 3 modules, 1.000s"


def test_the_wait_and_the_time_inside_finit_module_are_two_bars_of_their_widths() -> None:
    assert TIMELINE_WIDTH == 900
    pci, net, spkr = rows_of(parse(module_plot(ROWS)))
    pci_wait, pci_run = one(pci, "s:rect[@class='wait']"), one(pci, "s:rect[@class='run']")
    assert (pci_wait.get("width"), pci_run.get("width")) == ("180.00", "270.00")
    assert float(pci_run.get("x") or 0) - float(pci_wait.get("x") or 0) == 180.0
    net_wait, net_run = one(net, "s:rect[@class='wait']"), one(net, "s:rect[@class='run']")
    assert (net_wait.get("width"), net_run.get("width")) == ("450.00", "450.00")
    assert net_wait.get("x") == pci_wait.get("x")  # both queued at the start
    assert spkr.find("s:rect[@class='wait']", NS) is None  # it waited for nothing
    spkr_run = one(spkr, "s:rect[@class='run']")
    assert spkr_run.get("width") == "45.00"
    assert float(spkr_run.get("x") or 0) - float(pci_wait.get("x") or 0) == 90.0
    assert (pci_run.get("fill"), spkr_run.get("fill")) == ("#4c9a2a", "#c0392b")
    assert one(pci, "s:title").text == (
        f"virtio_pci: waited 200ms, inside finit_module 300ms; for {NIC}")


def test_the_legend_names_waiting_finit_module_and_the_critical_chain() -> None:
    legend = one(parse(module_plot(ROWS)), "s:g[@class='legend']")
    assert [t.text for t in legend.findall("s:text", NS)] == [
        "waiting (queued, dependencies)", "inside finit_module", "install command", "failed",
        "critical chain"]
    assert len(legend.findall("s:rect", NS)) == 5


def test_the_critical_chain_is_outlined_and_its_labels_bold() -> None:
    root = parse(module_plot(ROWS, frozenset({"virtio_pci", "virtio_net"})))
    assert [(g.get("data-label"), g.get("class")) for g in rows_of(root)] == [
        ("virtio_pci", "row critical"), ("virtio_net", "row critical"), ("pcspkr", "row")]
    pci, _, spkr = rows_of(root)
    assert one(pci, "s:rect[@class='run']").get("stroke") == "#d0021b"
    assert one(pci, "s:text").get("font-weight") == "bold"
    assert one(spkr, "s:rect[@class='run']").get("stroke") is None


def test_ticks_are_round_in_order_and_cover_the_span() -> None:
    root = parse(module_plot(ROWS))
    labels = [t.text for t in root.findall("s:g[@class='axis']/s:text", NS)]
    assert labels == ["0", "0.1 s", "0.2 s", "0.3 s", "0.4 s", "0.5 s", "0.6 s", "0.7 s",
                      "0.8 s", "0.9 s", "1 s"]
    xs = [float(t.get("x") or 0) for t in root.findall("s:g[@class='axis']/s:text", NS)]
    assert all(b - a == pytest.approx(90.0) for a, b in itertools.pairwise(xs))


@pytest.mark.parametrize(("span", "labels"), [
    (784_000, ["0", "100 ms", "200 ms", "300 ms", "400 ms", "500 ms", "600 ms", "700 ms",
               "800 ms"]),
    (392_000, ["0", "50 ms", "100 ms", "150 ms", "200 ms", "250 ms", "300 ms", "350 ms",
               "400 ms"]),
    (3_920_000, ["0", "0.5 s", "1 s", "1.5 s", "2 s", "2.5 s", "3 s", "3.5 s", "4 s"]),
    (17_300_000, ["0", "2 s", "4 s", "6 s", "8 s", "10 s", "12 s", "14 s", "16 s", "18 s"]),
    (999, ["0", "0.1 ms", "0.2 ms", "0.3 ms", "0.4 ms", "0.5 ms", "0.6 ms", "0.7 ms",
           "0.8 ms", "0.9 ms", "1 ms"]),
    (0, ["0", "1 us"]),
])
def test_tick_values_step_by_one_two_or_five_times_a_power_of_ten(
        span: int, labels: list[str]) -> None:
    axis = ticks(span)
    assert [label for _, label in axis] == labels
    step = tick_step(span)
    assert str(step).lstrip("0")[0] in "125" and set(str(step)[1:]) <= {"0"}
    assert [usec for usec, _ in axis] == [i * step for i in range(len(axis))]
    assert axis[-1][0] >= span


def _boxes(root: ET.Element) -> list[tuple[str, float, float, float, float]]:
    """Every text's box (text, left, top, right, bottom), CHAR_WIDTH per character."""
    boxes = []
    for element in root.iter(f"{{{NS['s']}}}text"):
        text = element.text or ""
        size = float(element.get("font-size") or FONT_SIZE)
        width = len(text) * CHAR_WIDTH * size / FONT_SIZE
        x, y = float(element.get("x") or 0), float(element.get("y") or 0)
        if element.get("text-anchor") == "middle":
            x -= width / 2
        boxes.append((text, x, y - size, x + width, y))
    return boxes


def test_no_two_labels_overlap_in_a_dense_boot_with_long_names() -> None:
    rows = [ModuleRow(f"module_{i:03d}_" + "with_a_very_long_name" * (i % 4), i * 1000,
                      i * 1000 + 500, i * 1000 + 700 + (i % 7) * 100, "inserted")
            for i in range(200)]
    root = parse(module_plot(rows, frozenset({"module_199_with_a_very_long_name" * 1})))
    boxes = _boxes(root)
    assert len(rows_of(root)) == 200
    assert len(boxes) == 1 + 5 + 11 + 200  # title, legend, ticks, a label per row
    for a, b in itertools.combinations(boxes, 2):
        apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
        assert apart, f"{a[0]!r} overlaps {b[0]!r}"
    x0 = min(float(r.get("x") or 0) for r in root.iter(f"{{{NS['s']}}}rect")
             if r.get("class") in ("wait", "run"))
    assert max(box[3] for box in boxes if box[1] == MARGIN and box[2] > 60) < x0


def test_a_long_name_is_cut_with_an_ellipsis_and_whole_in_the_tooltip() -> None:
    name = "x" * 60
    (row,) = rows_of(parse(module_plot([ModuleRow(name, 0, 10, 20)])))
    label = one(row, "s:text[@class='label']").text
    assert label == "x" * (MAX_LABEL_CHARS - 1) + "…"
    assert row.get("data-label") == name
    assert (one(row, "s:title").text or "").startswith(f"{name}: waited 10us")


def test_the_device_view_has_one_row_per_timed_device_from_queued_to_its_last_load() -> None:
    devices = [
        {"devpath": NIC, "candidates": ["virtio_net"], "queued_usec": 0, "started_usec": 100,
         "finished_usec": 1000, "outcome": "inserted"},
        {"devpath": "/devices/platform/serial8250", "candidates": [], "queued_usec": 5},
    ]
    root = parse(device_plot(devices))
    (row,) = rows_of(root)
    assert row.get("data-label") == f"{NIC} (virtio_net)"
    assert (one(row, "s:rect[@class='wait']").get("width"),
            one(row, "s:rect[@class='run']").get("width")) == ("90.00", "810.00")
    assert [t.text for t in root.findall("s:g[@class='legend']/s:text", NS)] == [
        "queued", "loading its modules", "a load failed"]


def test_nothing_timed_is_still_a_picture() -> None:
    root = parse(module_plot([]))
    assert rows_of(root) == []
    assert one(root, "s:text[@class='title']").text == "kmodd module loads: 0 modules, 0us"
