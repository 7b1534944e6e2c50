"""core.autoload.uevent: the kernel's uevent datagram format, its limits and every kind of bad
input."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodd.core.autoload.uevent import (
    MAX_UEVENT_BYTES,
    MAX_VALUE_LENGTH,
    MAX_VARIABLES,
    Action,
    Uevent,
    UeventDefect,
    UeventError,
    format_uevent,
    parse_uevent,
)

# A datagram exactly as this machine's kernel sent it for `echo add > .../pcspkr/uevent`.
PCSPKR = (
    b"add@/devices/platform/pcspkr\0ACTION=add\0DEVPATH=/devices/platform/pcspkr\0"
    b"SUBSYSTEM=platform\0SYNTH_UUID=0\0MODALIAS=platform:pcspkr\0SEQNUM=823\0"
)


def _datagram(*variables: str, header: str = "add@/devices/x") -> bytes:
    return ("\0".join((header, *variables)) + "\0").encode()


BASE = ("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=platform", "SEQNUM=7")


def test_a_kernel_datagram_parses_into_every_field() -> None:
    event = parse_uevent(PCSPKR)
    assert event == Uevent(
        action=Action.ADD,
        devpath="/devices/platform/pcspkr",
        subsystem="platform",
        seqnum=823,
        env={
            "ACTION": "add",
            "DEVPATH": "/devices/platform/pcspkr",
            "SUBSYSTEM": "platform",
            "SYNTH_UUID": "0",
            "MODALIAS": "platform:pcspkr",
            "SEQNUM": "823",
        },
    )
    assert isinstance(event, Uevent)
    assert event.modalias == "platform:pcspkr"
    assert event.sysname == "pcspkr"
    assert event.escaped is False


def test_an_empty_modalias_counts_as_none_like_udevs_question_mark_star() -> None:
    event = parse_uevent(_datagram(*BASE, "MODALIAS="))
    assert isinstance(event, Uevent)
    assert event.modalias is None


def test_a_value_may_contain_equals_signs_and_spaces() -> None:
    event = parse_uevent(_datagram(*BASE, "MODALIAS=dmi:bvn Foo=Bar:'x'"))
    assert isinstance(event, Uevent)
    assert event.env["MODALIAS"] == "dmi:bvn Foo=Bar:'x'"


def test_every_kernel_action_is_accepted() -> None:
    for action in Action:
        data = _datagram(f"ACTION={action}", *BASE[1:], header=f"{action}@/devices/x")
        event = parse_uevent(data)
        assert isinstance(event, Uevent) and event.action is action


def _at(data: bytes, marker: bytes) -> int:
    return data.index(marker)


_NOEQ = _datagram(*BASE[:2], "NOEQUALS", *BASE[2:])
_EMPTYVAR = _datagram(*BASE[:1], "", *BASE[1:])
_EMPTYKEY = _datagram(*BASE, "=value")
_SPACEKEY = _datagram(*BASE, "BAD KEY=1")
_TABKEY = _datagram(*BASE, "BAD\tKEY=1")
_DUP = _datagram(*BASE, "SUBSYSTEM=pci")
_NOACTION = _datagram(*BASE[1:])
_NOSEQNUM = _datagram(*BASE[:3])
_SEQ_LETTERS = _datagram(*BASE[:3], "SEQNUM=12a")
_SEQ_EMPTY = _datagram(*BASE[:3], "SEQNUM=")
_SEQ_HUGE = _datagram(*BASE[:3], "SEQNUM=" + "9" * 21)


@pytest.mark.parametrize(
    ("data", "defect", "offset", "variable"),
    [
        (b"", UeventDefect.EMPTY, 0, 0),
        (PCSPKR[:-1], UeventDefect.NOT_TERMINATED, len(PCSPKR) - 1, 0),
        (b"libudev\0ACTION=add\0", UeventDefect.BAD_HEADER, 0, 0),
        (b"add/devices/x\0ACTION=add\0", UeventDefect.BAD_HEADER, 0, 0),
        (b"@/devices/x\0ACTION=add\0", UeventDefect.BAD_HEADER, 0, 0),
        (_NOEQ, UeventDefect.NO_EQUALS, _at(_NOEQ, b"NOEQUALS"), 3),
        (_EMPTYVAR, UeventDefect.EMPTY_VARIABLE, _at(_EMPTYVAR, b"\0\0") + 1, 2),
        (_EMPTYKEY, UeventDefect.BAD_KEY, _at(_EMPTYKEY, b"=value"), 5),
        (_SPACEKEY, UeventDefect.BAD_KEY, _at(_SPACEKEY, b"BAD KEY"), 5),
        (_TABKEY, UeventDefect.BAD_KEY, _at(_TABKEY, b"BAD\tKEY"), 5),
        (_DUP, UeventDefect.DUPLICATE_KEY, _at(_DUP, b"SUBSYSTEM=pci"), 5),
        (_NOACTION, UeventDefect.MISSING_KEY, len(_NOACTION), 0),
        (_NOSEQNUM, UeventDefect.MISSING_KEY, len(_NOSEQNUM), 0),
        (_datagram(*BASE, header="add@/devices/y"), UeventDefect.HEADER_MISMATCH, 0, 0),
        (_datagram(*BASE, header="remove@/devices/x"), UeventDefect.HEADER_MISMATCH, 0, 0),
        (_datagram("ACTION=frob", *BASE[1:], header="frob@/devices/x"),
         UeventDefect.UNKNOWN_ACTION, 0, 0),
        (_SEQ_LETTERS, UeventDefect.BAD_SEQNUM, _at(_SEQ_LETTERS, b"SEQNUM"), 4),
        (_SEQ_EMPTY, UeventDefect.BAD_SEQNUM, _at(_SEQ_EMPTY, b"SEQNUM"), 4),
        (_SEQ_HUGE, UeventDefect.BAD_SEQNUM, _at(_SEQ_HUGE, b"SEQNUM"), 4),
    ],
)
def test_each_malformed_datagram_is_named_by_its_defect_and_offset(
    data: bytes, defect: UeventDefect, offset: int, variable: int
) -> None:
    result = parse_uevent(data)
    assert isinstance(result, UeventError)
    assert (result.defect, result.offset, result.variable) == (defect, offset, variable)
    assert result.message.startswith(f"malformed uevent ({defect.value} at offset {offset}")


def test_missing_keys_name_the_key() -> None:
    result = parse_uevent(_NOSEQNUM)
    assert isinstance(result, UeventError)
    assert result.detail == "SEQNUM"
    assert result.message == f"malformed uevent (missing-key at offset {len(_NOSEQNUM)}): SEQNUM"


def test_the_largest_datagram_is_accepted_and_one_byte_more_is_not() -> None:
    variables = [*BASE, *(f"V{i}={'a' * 1000}" for i in range(7))]
    data = _datagram(*variables)
    pad = MAX_UEVENT_BYTES - len(data)
    data = _datagram(*variables, "P=" + "b" * (pad - 3))
    assert len(data) == MAX_UEVENT_BYTES
    assert isinstance(parse_uevent(data), Uevent)
    too_large = parse_uevent(_datagram(*variables, "P=" + "b" * (pad - 2)))
    assert isinstance(too_large, UeventError)
    assert too_large.defect is UeventDefect.TOO_LARGE
    assert too_large.detail == f"{MAX_UEVENT_BYTES + 1} bytes > {MAX_UEVENT_BYTES}"


def test_at_most_max_variables_are_accepted() -> None:
    extra = [f"V{i}=1" for i in range(MAX_VARIABLES - len(BASE))]
    assert isinstance(parse_uevent(_datagram(*BASE, *extra)), Uevent)
    result = parse_uevent(_datagram(*BASE, *extra, "ONE_MORE=1"))
    assert isinstance(result, UeventError)
    assert result.defect is UeventDefect.TOO_MANY_VARIABLES
    assert result.variable == MAX_VARIABLES + 1


def test_a_value_longer_than_the_limit_is_rejected() -> None:
    assert isinstance(parse_uevent(_datagram(*BASE, "L=" + "v" * MAX_VALUE_LENGTH)), Uevent)
    result = parse_uevent(_datagram(*BASE, "L=" + "v" * (MAX_VALUE_LENGTH + 1)))
    assert isinstance(result, UeventError)
    assert (result.defect, result.variable) == (UeventDefect.VALUE_TOO_LONG, 5)
    assert result.detail == f"L: {MAX_VALUE_LENGTH + 1} > {MAX_VALUE_LENGTH}"


def test_bytes_that_are_not_utf8_are_kept_as_escapes_and_flagged() -> None:
    data = _datagram(*BASE).replace(b"platform", b"plat\xffform")
    event = parse_uevent(data)
    assert isinstance(event, Uevent)
    assert event.subsystem == "plat\\xffform"
    assert event.escaped is True


def test_the_first_defect_in_order_is_the_one_reported() -> None:
    result = parse_uevent(_datagram(*BASE, "NOEQ", "=x", "SEQNUM=1"))
    assert isinstance(result, UeventError)
    assert (result.defect, result.variable) == (UeventDefect.NO_EQUALS, 5)


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_any_bytes_give_an_event_or_a_diagnostic_and_never_raise(data: bytes) -> None:
    result = parse_uevent(data)
    assert isinstance(result, (Uevent, UeventError))
    if isinstance(result, UeventError):
        assert 0 <= result.offset <= max(len(data), MAX_UEVENT_BYTES)


_KEY = st.text(string.ascii_uppercase + string.digits + "_", min_size=1, max_size=12)
_VALUE = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                 max_size=40)


@settings(max_examples=300)
@given(
    action=st.sampled_from(list(Action)),
    devpath=st.text(string.ascii_letters + string.digits + "/:._-", min_size=1, max_size=40),
    extra=st.dictionaries(_KEY, _VALUE, max_size=20),
    seqnum=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_formatting_then_parsing_gives_the_same_event(
    action: Action, devpath: str, extra: dict[str, str], seqnum: int
) -> None:
    env = {"ACTION": action.value, "DEVPATH": "/" + devpath, "SUBSYSTEM": "pci"}
    env.update({k: v for k, v in extra.items() if k not in ("ACTION", "DEVPATH", "SUBSYSTEM")})
    env["SEQNUM"] = str(seqnum)
    event = Uevent(action, "/" + devpath, "pci", seqnum, env)
    assert parse_uevent(format_uevent(event)) == event


@settings(max_examples=300)
@given(st.data())
def test_mutating_one_byte_of_a_real_datagram_never_raises(data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(PCSPKR) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = PCSPKR[:position] + bytes([byte]) + PCSPKR[position + 1 :]
    assert isinstance(parse_uevent(mutated), (Uevent, UeventError))
