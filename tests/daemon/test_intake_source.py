"""The intake's side of the uevent source: batches queue devices, a broken source ends it."""

from __future__ import annotations

import asyncio
import errno

import pytest

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.daemon.intake import Intake, Origin
from kmodd.system.root import Root
from tests.fakes import FakeUeventSource


def _event(devpath: str, seqnum: int) -> Uevent:
    env = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": "pci", "SEQNUM": str(seqnum),
           "MODALIAS": "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"}
    return Uevent(Action.ADD, devpath, "pci", seqnum, env)


def test_batches_from_the_source_are_queued_in_the_order_the_kernel_sent_them() -> None:
    async def scenario() -> list[tuple[str, Origin]]:
        source = FakeUeventSource()
        intake = Intake(source, Root(), depth=8, handled=lambda devpath, modalias: False)
        source.push(_event("/devices/a", 1), _event("/devices/b", 2))  # before attaching
        receiving = asyncio.create_task(intake.run_receive())
        source.push(_event("/devices/c", 3))
        got = [await asyncio.wait_for(intake.get(), 3.0) for _ in range(3)]
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        return [(q.event.devpath, q.origin) for q in got]

    assert asyncio.run(scenario()) == [("/devices/a", Origin.KERNEL),
                                       ("/devices/b", Origin.KERNEL),
                                       ("/devices/c", Origin.KERNEL)]


def test_a_source_that_breaks_down_ends_the_receive_task_with_its_error() -> None:
    async def scenario() -> None:
        source = FakeUeventSource()
        intake = Intake(source, Root(), depth=8, handled=lambda devpath, modalias: False)
        receiving = asyncio.create_task(intake.run_receive())
        await asyncio.sleep(0)  # attached
        source.break_down(OSError(errno.EBADF, "Bad file descriptor"))
        await asyncio.wait_for(receiving, 3.0)

    with pytest.raises(OSError) as raised:
        asyncio.run(scenario())
    assert raised.value.errno == errno.EBADF
