"""What the module table keeps of an insert's timeline (daemon.records.Records.note_step):
the inserting chain's wait, the module it waited for and its device, never those of a chain
that only waited for the same insert."""

from __future__ import annotations

from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.plan import StepAction
from kmodd.daemon.loader import StepResult
from kmodd.daemon.records import Records

NIC = "/devices/pci0000:00/0000:00:03.0/virtio2"
SOUND = "/devices/pci0000:00/0000:00:1b.0"


def insert(module: str, queued: float, started: float, finished: float, after: str | None,
           *, joined: bool = False) -> StepResult:
    outcome = Outcome.ALREADY_LOADED if joined else Outcome.INSERTED
    return StepResult(module, StepAction.INSERT, outcome, 0, None, True, False,
                      started=started, finished=finished, joined=joined, queued=queued,
                      after=after)


def timeline(records: Records, name: str) -> tuple[object, ...]:
    r = records.modules[name]
    return r.queued, r.started, r.finished, r.after, r.device


def test_the_inserting_chains_timeline_is_kept_when_a_joined_chain_is_told_after_it() -> None:
    records = Records()
    records.note_step(insert("core", 1.0, 2.0, 3.0, None), NIC)
    records.note_step(insert("core", 1.5, 2.0, 3.0, "soundcore", joined=True), SOUND)
    assert timeline(records, "core") == (1.0, 2.0, 3.0, None, NIC)
    assert records.modules["core"].devices == {NIC, SOUND}


def test_the_inserting_chains_timeline_replaces_a_joined_chain_told_before_it() -> None:
    records = Records()
    records.note_step(insert("core", 1.5, 2.0, 3.0, "soundcore", joined=True), SOUND)
    records.note_step(insert("core", 1.0, 2.0, 3.0, None), NIC)
    assert timeline(records, "core") == (1.0, 2.0, 3.0, None, NIC)


def test_a_later_insert_of_the_module_is_its_new_timeline() -> None:
    records = Records()
    records.note_step(insert("core", 1.0, 2.0, 3.0, None), NIC)
    records.note_step(insert("core", 10.0, 12.0, 13.0, "dep"), SOUND)
    assert timeline(records, "core") == (10.0, 12.0, 13.0, "dep", SOUND)
