"""One insert per module at a time: a second caller waits for the running insert's result, and
a caller that comes in after another's insert of the module ended is answered EEXIST."""

from __future__ import annotations

import errno as E
import threading
import time

from kmodd.core.kmod.plan import StepAction
from kmodd.daemon.loader import InflightInserts, _Attempt


def _ok() -> _Attempt:
    now = time.monotonic()
    return _Attempt(StepAction.INSERT, 0, now, now)


def _never() -> _Attempt:
    raise AssertionError("the insert must not be made again")


def test_an_insert_that_ended_after_the_caller_looked_answers_eexist_without_inserting() -> None:
    inserts = InflightInserts()
    asked = time.monotonic()
    first, first_waited = inserts.run("sd_mod", _ok, asked)
    again, again_waited = inserts.run("sd_mod", _never, asked)
    assert (first.errno, first_waited) == (0, False)
    assert (again.errno, again.detail, again_waited) == (
        E.EEXIST, "loaded meanwhile by another chain", False)


def test_a_caller_that_looked_after_the_insert_ended_inserts_again() -> None:
    """The module was found not loaded after our insert: it was removed since."""
    inserts = InflightInserts()
    inserts.run("sd_mod", _ok, time.monotonic())
    calls: list[str] = []

    def insert() -> _Attempt:
        calls.append("sd_mod")
        return _ok()

    result, waited = inserts.run("sd_mod", insert, time.monotonic())
    assert (result.errno, waited, calls) == (0, False, ["sd_mod"])


def test_a_failed_insert_is_not_remembered_as_loaded() -> None:
    inserts = InflightInserts()
    asked = time.monotonic()

    def fails() -> _Attempt:
        now = time.monotonic()
        return _Attempt(StepAction.INSERT, E.ENOEXEC, now, now)

    inserts.run("broken", fails, asked)
    calls: list[str] = []

    def insert() -> _Attempt:
        calls.append("broken")
        return fails()

    result, _ = inserts.run("broken", insert, asked)
    assert (result.errno, calls) == (E.ENOEXEC, ["broken"])


def test_a_second_caller_waits_for_the_running_insert_and_gets_its_result() -> None:
    inserts = InflightInserts()
    entered, release = threading.Event(), threading.Event()
    results: list[tuple[_Attempt, bool]] = []

    def slow() -> _Attempt:
        entered.set()
        release.wait(10)
        return _ok()

    owner = threading.Thread(target=lambda: results.append(
        inserts.run("t10_pi", slow, time.monotonic())))
    owner.start()
    assert entered.wait(10)
    waiter = threading.Thread(target=lambda: results.append(
        inserts.run("t10_pi", _never, time.monotonic())))
    waiter.start()
    while inserts.joined == 0:
        time.sleep(0.001)
    assert inserts.names() == frozenset({"t10_pi"})
    release.set()
    owner.join(10)
    waiter.join(10)
    (mine, mine_waited), (theirs, theirs_waited) = sorted(results, key=lambda r: r[1])
    assert (mine_waited, theirs_waited) == (False, True)
    assert theirs is mine
    assert inserts.names() == frozenset()
