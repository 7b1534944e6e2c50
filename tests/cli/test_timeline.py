"""The timeline as data (kmodd.cli.timeline): the timed rows of a ListModules reply and the
critical chain `kmodctl critical-chain` prints, as systemd-analyze prints units."""

from __future__ import annotations

from typing import Any

import pytest

from kmodd.cli.timeline import (
    CHAIN_HEADER,
    Link,
    ModuleRow,
    NotTimed,
    critical_chain,
    module_rows,
    render_chain,
)

NIC = "/devices/pci0000:00/0000:00:03.0/virtio2"
SOUND = "/devices/pci0000:00/0000:00:1b.0"

#: Two devices' chains: the NIC's inserts core, pci, then net; the sound card's chain waited
#: for the NIC chain's insert of core (so core's row is the NIC's) and then inserted hda.
ROWS = [
    ModuleRow("core", 2000, 3000, 5000, "inserted", None, NIC),
    ModuleRow("pci", 2000, 5000, 9000, "inserted", "core", NIC),
    ModuleRow("net", 2000, 9000, 20_000, "inserted", "pci", NIC),
    ModuleRow("hda", 2500, 6000, 30_000, "inserted", "core", SOUND),
]
QUEUED = {NIC: 1000, SOUND: 1500}


def test_rows_are_the_timed_modules_in_the_order_they_were_queued() -> None:
    reply: list[dict[str, Any]] = [
        {"name": "b", "state": "live", "queued_usec": 10, "started_usec": 30,
         "finished_usec": 40, "outcome": "inserted", "after": "a", "device": NIC},
        {"name": "never", "state": "not-loaded", "outcome": "blacklisted"},
        {"name": "a", "state": "live", "queued_usec": 10, "started_usec": 20,
         "finished_usec": 30, "outcome": "inserted", "device": NIC},
        {"name": "old", "state": "live", "started_usec": 5, "finished_usec": 8},
    ]
    assert module_rows(reply) == [
        ModuleRow("old", 5, 5, 8),
        ModuleRow("a", 10, 20, 30, "inserted", None, NIC),
        ModuleRow("b", 10, 30, 40, "inserted", "a", NIC),
    ]
    assert (module_rows(reply)[2].waited_usec, module_rows(reply)[2].took_usec) == (20, 10)


def test_without_a_module_the_chain_ends_at_the_module_that_went_live_last() -> None:
    assert critical_chain(ROWS, QUEUED) == [
        Link("hda", 30_000, 24_000), Link("core", 5000, 2000), Link(NIC, 1000, device=True)]


def test_the_chain_of_a_module_follows_what_it_waited_for_down_to_its_device() -> None:
    assert render_chain(critical_chain(ROWS, QUEUED, "net")) == CHAIN_HEADER + (
        "\n"
        "net @20ms +11ms\n"
        "└─pci @9ms +4ms\n"
        "  └─core @5ms +2ms\n"
        f"    └─{NIC} @1ms\n")


def test_the_output_says_what_the_at_and_plus_times_are_as_systemd_analyze_does() -> None:
    assert render_chain(critical_chain(ROWS, QUEUED, "hda")) == (
        'The time when a module went live (a device: when its uevent was queued) is printed '
        'after the "@" character.\n'
        'The time its insert took (inside finit_module) is printed after the "+" '
        'character.\n'
        "\n"
        "hda @30ms +24ms\n"
        "└─core @5ms +2ms\n"
        f"  └─{NIC} @1ms\n")


def test_a_module_name_is_taken_with_dashes_and_a_device_not_known_has_no_time() -> None:
    rows = [ModuleRow("snd_pcm", 0, 1000, 1_500_000, "inserted", None, SOUND)]
    assert render_chain(critical_chain(rows, {}, "snd-pcm")).split("\n\n", 1)[1] == (
        "snd_pcm @1.500s +1.499s\n"
        f"└─{SOUND}\n")


def test_a_module_without_a_timed_load_has_no_chain() -> None:
    with pytest.raises(NotTimed):
        critical_chain(ROWS, QUEUED, "e1000")
    assert critical_chain([], QUEUED) == []


def test_a_loop_in_the_records_ends_the_chain_instead_of_running_forever() -> None:
    rows = [ModuleRow("a", 0, 1, 2, after="b", device=NIC),
            ModuleRow("b", 0, 3, 4, after="a", device=SOUND)]
    assert critical_chain(rows, QUEUED) == [
        Link("b", 4, 1), Link("a", 2, 1), Link(NIC, 1000, device=True)]
