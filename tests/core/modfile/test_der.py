"""core.modfile.der: the DER/BER reader under module signatures, with OpenSSL 3's rules.

Each malformed input is refused with a DerError naming what is wrong and the byte where it
is; arbitrary bytes never raise anything else.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodd.core.modfile.der import (
    CONTEXT,
    INTEGER,
    MAX_DEPTH,
    OCTET_STRING,
    SEQUENCE,
    UNIVERSAL,
    DerError,
    Tlv,
    check_any,
    check_integer,
    check_oid,
    children,
    content,
    expect,
    integer_magnitude,
    name_value,
    read,
    string_bytes,
)


def refused(call: object, *args: object) -> tuple[str, int]:
    """The reason and offset of the DerError `call(*args)` raises."""
    assert callable(call)
    with pytest.raises(DerError) as caught:
        call(*args)
    return caught.value.reason, caught.value.offset


def top(buf: bytes) -> Tlv:
    return read(buf, 0, len(buf))


# -- read -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("buf", "tlv"), [
    (b"\x04\x03abc", Tlv(UNIVERSAL, False, OCTET_STRING, 0, 2, 5, 5)),
    (b"\x30\x00", Tlv(UNIVERSAL, True, SEQUENCE, 0, 2, 2, 2)),
    (b"\xa0\x01\x05", Tlv(CONTEXT, True, 0, 0, 2, 3, 3)),
    (b"\x04\x81\x03abc", Tlv(UNIVERSAL, False, OCTET_STRING, 0, 3, 6, 6)),
    (b"\x04\x84\x00\x00\x00\x01x", Tlv(UNIVERSAL, False, OCTET_STRING, 0, 6, 7, 7)),
    (b"\x1f\x81\x00\x00", Tlv(UNIVERSAL, False, 128, 0, 4, 4, 4)),
    (b"\x5f\x1f\x00", Tlv(1, False, 31, 0, 3, 3, 3)),
    (b"\x30\x80\x02\x01\x05\x00\x00", Tlv(UNIVERSAL, True, SEQUENCE, 0, 2, 5, 7)),
])
def test_an_element_reads_as_class_form_tag_and_spans(buf: bytes, tlv: Tlv) -> None:
    assert top(buf) == tlv


def test_an_element_after_others_is_read_at_its_offset() -> None:
    buf = b"\x05\x00\x02\x01\x07"
    first = top(buf)
    assert read(buf, first.next, len(buf)) == Tlv(UNIVERSAL, False, INTEGER, 2, 4, 5, 5)


@pytest.mark.parametrize(("buf", "reason", "offset"), [
    (b"", "element expected, data ended", 0),
    (b"\x1f", "tag number runs past the data", 1),
    (b"\x1f\x81", "tag number runs past the data", 2),
    (b"\x1f\x81\x81\x81\x81\x01\x00", "tag number too long", 0),
    (b"\x04", "length expected, data ended", 1),
    (b"\x04\x80", "indefinite length on a primitive element", 0),
    (b"\x04\x85\x00\x00\x00\x00\x01x", "length field too wide", 1),
    (b"\x04\x82\x01", "length field runs past the data", 2),
    (b"\x04\x05ab", "element claims 5 bytes, 2 are left", 0),
    (b"\x04\x81\x05abc", "element claims 5 bytes, 3 are left", 0),
    (b"\x30\x80\x02\x01\x05", "element expected, data ended", 5),
    (b"\x30\x80\x02\x01\x05\x00", "length expected, data ended", 6),
])
def test_malformed_input_is_refused_with_the_reason_and_offset(buf: bytes, reason: str,
                                                               offset: int) -> None:
    assert refused(read, buf, 0, len(buf)) == (reason, offset)


def test_an_element_must_end_by_the_limit_given() -> None:
    buf = b"\x04\x03abc\x00"
    assert refused(read, buf, 0, 4) == ("element claims 3 bytes, 2 are left", 0)


def test_the_message_names_reason_and_byte() -> None:
    assert str(DerError("empty INTEGER", 7)) == "empty INTEGER at byte 7"


def nested_indefinite(levels: int) -> bytes:
    return b"\x30\x80" * levels + b"\x00\x00" * levels


def test_nesting_is_read_down_to_max_depth_and_refused_below_it() -> None:
    deepest = nested_indefinite(MAX_DEPTH + 1)
    assert top(deepest).next == len(deepest)
    assert refused(top, nested_indefinite(MAX_DEPTH + 2)) == (
        "nesting too deep", 2 * (MAX_DEPTH + 1))


def test_walking_children_counts_depth_too() -> None:
    buf = b"\x05\x00"
    for _ in range(MAX_DEPTH + 2):
        buf = bytes([0x30, len(buf)]) + buf if len(buf) < 128 else \
            bytes([0x30, 0x81, len(buf)]) + buf

    def walk(tlv: Tlv, depth: int) -> None:
        if tlv.constructed:
            for child in children(buf, tlv, depth):
                walk(child, depth + 1)

    reason, offset = refused(walk, top(buf), 0)
    assert reason == "nesting too deep"
    assert buf[offset] == 0x30


# -- children and expect ----------------------------------------------------------------------

def test_children_are_the_elements_inside_in_order() -> None:
    buf = b"\x30\x05\x02\x01\x01\x05\x00"
    assert [(c.tag, c.header) for c in children(buf, top(buf))] == [(2, 2), (5, 5)]
    indefinite = b"\x30\x80\x05\x00\x00\x00"
    assert [(c.tag, c.header) for c in children(indefinite, top(indefinite))] == [(5, 2)]


def test_children_of_a_primitive_element_are_refused() -> None:
    assert refused(children, b"\x04\x00", top(b"\x04\x00")) == (
        "constructed element expected", 0)


def test_a_child_may_not_run_past_its_parent() -> None:
    buf = b"\x30\x03\x04\x05a\x00\x00\x00"
    assert refused(children, buf, read(buf, 0, len(buf))) == (
        "element claims 5 bytes, 1 are left", 2)


@pytest.mark.parametrize(("buf", "tag", "cls", "reason"), [
    (b"\x02\x01\x01", SEQUENCE, UNIVERSAL, "thing expected"),
    (b"\xa0\x00", 0, UNIVERSAL, "thing expected"),
    (b"\x10\x00", SEQUENCE, UNIVERSAL, "thing is not constructed"),
    (b"\x11\x00", 17, UNIVERSAL, "thing is not constructed"),
    (b"\x22\x00", INTEGER, UNIVERSAL, "thing is not primitive"),
    (b"\x25\x00", 5, UNIVERSAL, "thing is not primitive"),
])
def test_expect_refuses_the_wrong_tag_class_or_form(buf: bytes, tag: int, cls: int,
                                                    reason: str) -> None:
    assert refused(expect, top(buf), tag, "thing", cls) == (reason, 0)


def test_expect_returns_the_element_it_was_given() -> None:
    tlv = top(b"\xa0\x00")
    assert expect(tlv, 0, "explicit", CONTEXT) is tlv
    constructed_string = top(b"\x24\x00")
    assert expect(constructed_string, OCTET_STRING, "string") is constructed_string


# -- INTEGER and OBJECT IDENTIFIER ------------------------------------------------------------

@pytest.mark.parametrize(("buf", "raw", "magnitude"), [
    (b"\x02\x01\x00", b"\x00", b""),
    (b"\x02\x01\x7f", b"\x7f", b"\x7f"),
    (b"\x02\x02\x00\x80", b"\x00\x80", b"\x80"),
    (b"\x02\x02\xff\x7f", b"\xff\x7f", b"\x81"),
    (b"\x02\x02\xff\x00", b"\xff\x00", b"\x01\x00"),
    (b"\x02\x01\x80", b"\x80", b"\x80"),
])
def test_a_valid_integer_gives_its_content_and_magnitude(buf: bytes, raw: bytes,
                                                         magnitude: bytes) -> None:
    assert check_integer(buf, top(buf)) == raw
    assert integer_magnitude(raw) == magnitude


@pytest.mark.parametrize(("buf", "reason"), [
    (b"\x02\x00", "empty INTEGER"),
    (b"\x02\x02\x00\x01", "INTEGER with illegal padding"),
    (b"\x02\x02\xff\x80", "INTEGER with illegal padding"),
    (b"\x02\x03\xff\xff\x01", "INTEGER with illegal padding"),
])
def test_a_bad_integer_is_refused(buf: bytes, reason: str) -> None:
    assert refused(check_integer, buf, top(buf)) == (reason, 0)


@pytest.mark.parametrize("buf", [
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02", b"\x06\x01\x00",
    b"\x06\x04\x2a\x81\x80\x01",
])
def test_a_valid_object_identifier_gives_its_content(buf: bytes) -> None:
    assert check_oid(buf, top(buf)) == buf[2:]


@pytest.mark.parametrize("buf", [
    b"\x06\x00", b"\x06\x01\x81", b"\x06\x02\x80\x01", b"\x06\x03\x2a\x80\x01",
    b"\x06\x02\x2a\x86",
])
def test_a_bad_object_identifier_is_refused(buf: bytes) -> None:
    assert refused(check_oid, buf, top(buf)) == ("invalid OBJECT IDENTIFIER encoding", 0)


# -- strings and ANY --------------------------------------------------------------------------

@pytest.mark.parametrize(("buf", "octets"), [
    (b"\x04\x03abc", b"abc"),
    (b"\x24\x08\x04\x02ab\x04\x02cd", b"abcd"),
    (b"\x24\x80\x04\x01a\x24\x03\x04\x01b\x00\x00", b"ab"),
    (b"\x24\x00", b""),
])
def test_a_string_is_its_octets_or_its_pieces_joined(buf: bytes, octets: bytes) -> None:
    assert string_bytes(buf, top(buf)) == octets
    assert content(buf, top(buf)) == buf[top(buf).start:top(buf).end]


@pytest.mark.parametrize(("buf", "reason", "offset"), [
    (b"\x05\x01\x00", "NULL with content", 0),
    (b"\x25\x00", "NULL is not primitive", 0),
    (b"\x01\x02\x00\x00", "BOOLEAN of wrong length", 0),
    (b"\x01\x00", "BOOLEAN of wrong length", 0),
    (b"\x02\x00", "empty INTEGER", 0),
    (b"\x06\x00", "invalid OBJECT IDENTIFIER encoding", 0),
    (b"\x10\x00", "SEQUENCE is not constructed", 0),
    (b"\x24\x03\x04\x05a", "element claims 5 bytes, 1 are left", 2),
])
def test_any_is_checked_as_the_universal_type_its_tag_names(buf: bytes, reason: str,
                                                             offset: int) -> None:
    assert refused(check_any, buf, top(buf)) == (reason, offset)


@pytest.mark.parametrize("buf", [b"\x05\x00", b"\x01\x01\xff", b"\x30\x00", b"\xa0\x01\x05",
                                 b"\x9f\x1f\x00", b"\x0c\x01\xff"])
def test_any_accepts_what_openssl_accepts(buf: bytes) -> None:
    check_any(buf, top(buf))  # raises DerError for what it refuses


# -- X.509 name values ------------------------------------------------------------------------

@pytest.mark.parametrize(("buf", "value"), [
    (b"\x0c\x02\xc3\xa9", b"\xc3\xa9"),
    (b"\x13\x03abc", b"abc"),
    (b"\x14\x01\xff", b"\xff"),
    (b"\x1e\x04\x00a\x00b", b"\x00a\x00b"),
    (b"\x1c\x04\x00\x10\xff\xff", b"\x00\x10\xff\xff"),
    (b"\x03\x02\x00\xff", b"\xff"),
    (b"\x30\x03\x02\x01\x01", b"\x30\x03\x02\x01\x01"),
    (b"\x2c\x05\x04\x01a\x04\x00", b"a"),
])
def test_a_name_value_is_stored_as_openssl_stores_it(buf: bytes, value: bytes) -> None:
    assert name_value(buf, top(buf)) == value


@pytest.mark.parametrize(("buf", "reason"), [
    (b"\x02\x01\x01", "name value of a type OpenSSL does not accept"),
    (b"\x04\x01a", "name value of a type OpenSSL does not accept"),
    (b"\x80\x01a", "name value of a type OpenSSL does not accept"),
    (b"\x10\x00", "SEQUENCE is not constructed"),
    (b"\x03\x00", "BIT STRING with a bad unused-bits count"),
    (b"\x03\x02\x08\xff", "BIT STRING with a bad unused-bits count"),
    (b"\x0c\x01\xff", "name text that does not convert to UTF-8"),
    (b"\x1e\x03\x00a\x00", "name text that does not convert to UTF-8"),
    (b"\x1e\x02\xd8\x00", "name text that does not convert to UTF-8"),
    (b"\x1c\x04\x00\x11\x00\x00", "name text that does not convert to UTF-8"),
])
def test_a_name_value_openssl_refuses_is_refused(buf: bytes, reason: str) -> None:
    assert refused(name_value, buf, top(buf)) == (reason, 0)


# -- anything at all --------------------------------------------------------------------------

def every_reading(buf: bytes) -> None:
    """Read the elements in `buf` one after another, and each with every checker."""
    pos = 0
    while pos < len(buf):
        tlv = read(buf, pos, len(buf))
        assert pos < tlv.next <= len(buf)
        assert tlv.start <= tlv.end <= tlv.next
        visit(buf, tlv, 0)
        pos = tlv.next


def visit(buf: bytes, tlv: Tlv, depth: int) -> None:
    for checker in (check_any, name_value):
        try:
            checker(buf, tlv, depth)
        except DerError as e:
            assert 0 <= e.offset <= len(buf)
    for checker2 in (check_integer, check_oid, string_bytes):
        try:
            checker2(buf, tlv)
        except DerError as e:
            assert 0 <= e.offset <= len(buf)
    integer_magnitude(content(buf, tlv))
    if tlv.constructed:
        for child in children(buf, tlv, depth):
            visit(buf, child, depth + 1)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from([b"\x30\x80", b"\x24\x80", b"\x00\x00", b"\x04\x01a", b"\x30",
                              b"\x81", b"\x1f", b"\x02\x01\x80", b"\x06\x01\x80"]),
             max_size=40).map(b"".join),
))
def test_arbitrary_bytes_raise_nothing_but_der_error(buf: bytes) -> None:
    try:
        every_reading(buf)
    except DerError as e:
        assert 0 <= e.offset <= len(buf)
