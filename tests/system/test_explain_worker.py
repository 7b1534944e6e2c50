"""The explain worker's request: a failed attempt crosses the pipe unchanged."""

from __future__ import annotations

import json

import pytest

from kmodd.core.autoload.kmsg import KmsgRecord
from kmodd.core.explain.facts import FailedAttempt
from kmodd.core.priority import Priority
from kmodd.system.explain_worker import decode_failure, encode_request


def test_a_failed_attempt_round_trips_through_the_request() -> None:
    # Every field differs from its default, so a field the request forgets fails this.
    failure = FailedAttempt(
        module="e1000", errno=2, stage="finit_module", step="e1000",
        kmsg=(KmsgRecord(7, Priority.ERR, 0, 123456, "-", "e1000: Unknown symbol x (err -2)",
                         (("SUBSYSTEM", "pci"),)),),
        options="debug=1", messages=("modprobe: ERROR: could not insert 'e1000'",),
        declined=True)
    request = json.loads(encode_request(target="e1000", root="/r", moddir="/lib/modules/6",
                                        failure=failure, read_log=False))
    assert (request["target"], request["root"], request["moddir"], request["read_log"]) == \
        ("e1000", "/r", "/lib/modules/6", False)
    assert decode_failure(request["failure"]) == failure


def test_no_failure_is_null() -> None:
    request = json.loads(encode_request(target="x", root="/", moddir="/m", failure=None,
                                        read_log=True))
    assert request["failure"] is None and decode_failure(None) is None


@pytest.mark.parametrize("damaged", [{"module": "x"}, {"module": "x", "errno": "two",
                                                        "stage": None, "step": None,
                                                        "options": None, "messages": [],
                                                        "kmsg": []}])
def test_a_damaged_failure_raises_a_value_or_key_error(damaged: dict[str, object]) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_failure(damaged)
