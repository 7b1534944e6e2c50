"""A small BER/DER reader with OpenSSL's rules for the types a module signature uses.

kmod reads module signatures with OpenSSL (`d2i_PKCS7_bio`), which refuses a whole signature
when any part is malformed. To show the same signature fields as kmod, kmodd must refuse the
same inputs, so the checks below follow OpenSSL 3's decoder (`crypto/asn1/tasn_dec.c`,
`a_int.c: c2i_ibuf`, `a_object.c: c2i_ASN1_OBJECT`, `x_name.c`, `a_mbstr.c`):

* lengths: short, long (up to 4 bytes) or indefinite (constructed only, ended by 00 00);
* INTEGER: primitive, not empty, no illegal padding;
* OBJECT IDENTIFIER: primitive, not empty, no 0x80 at the start of a sub-identifier, and the
  last byte ends a sub-identifier;
* NULL: empty; BOOLEAN: one byte;
* OCTET STRING and other strings: primitive, or constructed of pieces (BER);
* X.509 name values: a universal tag from OpenSSL's "printable" set, and for the text types
  OpenSSL canonicalises, text that converts to UTF-8.

Malformed input raises `DerError` (reason and byte offset); callers turn it into a value.
"""

from __future__ import annotations

from typing import NamedTuple

#: How deep nested elements may go before the reader calls the input hostile.
MAX_DEPTH = 32
#: Widest long-form length accepted.
MAX_LENGTH_BYTES = 4

UNIVERSAL, APPLICATION, CONTEXT, PRIVATE = 0, 1, 2, 3
BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, NULL, OID = 1, 2, 3, 4, 5, 6
UTF8STRING, SEQUENCE, SET = 12, 16, 17
PRINTABLESTRING, T61STRING, IA5STRING, VISIBLESTRING = 19, 20, 22, 26
UNIVERSALSTRING, BMPSTRING = 28, 30

#: Universal tags OpenSSL accepts as an X.509 name value (`B_ASN1_PRINTABLE` through
#: `ASN1_tag2bit`: the string types, BIT STRING, SEQUENCE and the tags it calls unknown).
NAME_VALUE_TAGS = frozenset({3, 7, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 28, 29, 30})
#: Name value types OpenSSL converts to UTF-8 when it canonicalises a name, and the width
#: of one character in each (0: UTF-8 itself).
CANONICAL_WIDTH = {UTF8STRING: 0, PRINTABLESTRING: 1, T61STRING: 1, IA5STRING: 1,
                   VISIBLESTRING: 1, UNIVERSALSTRING: 4, BMPSTRING: 2}


class DerError(Exception):
    """Malformed encoding: what is wrong and at which byte."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at byte {offset}")
        self.reason = reason
        self.offset = offset


class Tlv(NamedTuple):
    """One element: class, constructed flag, tag number, content span, next element."""

    cls: int
    constructed: bool
    tag: int
    header: int  # offset of the identifier byte
    start: int  # first content byte
    end: int  # one past the last content byte
    next: int  # first byte after the element (after 00 00 for an indefinite length)


def read(buf: bytes, pos: int, limit: int, depth: int = 0) -> Tlv:
    """Read the element at `pos`; it must end by `limit`."""
    if depth > MAX_DEPTH:
        raise DerError("nesting too deep", pos)
    if pos >= limit:
        raise DerError("element expected, data ended", pos)
    first = buf[pos]
    cls, constructed, tag = first >> 6, bool(first & 0x20), first & 0x1F
    i = pos + 1
    if tag == 0x1F:
        tag = 0
        for _ in range(4):
            if i >= limit:
                raise DerError("tag number runs past the data", i)
            b = buf[i]
            i += 1
            tag = tag << 7 | (b & 0x7F)
            if not b & 0x80:
                break
        else:
            raise DerError("tag number too long", pos)
    if i >= limit:
        raise DerError("length expected, data ended", i)
    length_byte = buf[i]
    i += 1
    if length_byte == 0x80:
        if not constructed:
            raise DerError("indefinite length on a primitive element", pos)
        child = i
        while True:
            if child + 2 <= limit and buf[child] == 0 and buf[child + 1] == 0:
                return Tlv(cls, constructed, tag, pos, i, child, child + 2)
            child = read(buf, child, limit, depth + 1).next
    if length_byte < 0x80:
        end = i + length_byte
    else:
        count = length_byte & 0x7F
        if count > MAX_LENGTH_BYTES:
            raise DerError("length field too wide", i - 1)
        if i + count > limit:
            raise DerError("length field runs past the data", i)
        end = i + count + int.from_bytes(buf[i:i + count], "big")
        i += count
    if end > limit:
        raise DerError(f"element claims {end - i} bytes, {limit - i} are left", pos)
    return Tlv(cls, constructed, tag, pos, i, end, end)


def children(buf: bytes, tlv: Tlv, depth: int = 0) -> list[Tlv]:
    """The elements inside a constructed element."""
    if not tlv.constructed:
        raise DerError("constructed element expected", tlv.header)
    out: list[Tlv] = []
    pos = tlv.start
    while pos < tlv.end:
        child = read(buf, pos, tlv.end, depth + 1)
        out.append(child)
        pos = child.next
    return out


def expect(tlv: Tlv, tag: int, what: str, cls: int = UNIVERSAL) -> Tlv:
    """`tlv` if it has this class and tag (constructed as SEQUENCE/SET must be)."""
    if tlv.cls != cls or tlv.tag != tag:
        raise DerError(f"{what} expected", tlv.header)
    if cls == UNIVERSAL and tag in (SEQUENCE, SET) and not tlv.constructed:
        raise DerError(f"{what} is not constructed", tlv.header)
    if cls == UNIVERSAL and tag in (BOOLEAN, INTEGER, NULL, OID) and tlv.constructed:
        raise DerError(f"{what} is not primitive", tlv.header)
    return tlv


def content(buf: bytes, tlv: Tlv) -> bytes:
    return buf[tlv.start:tlv.end]


def check_integer(buf: bytes, tlv: Tlv) -> bytes:
    """An INTEGER's content octets, after OpenSSL's `c2i_ibuf` checks."""
    raw = content(buf, tlv)
    if not raw:
        raise DerError("empty INTEGER", tlv.header)
    if len(raw) > 1:
        negative = raw[0] & 0x80
        pad = raw[0] == 0 or (raw[0] == 0xFF and any(raw[1:]))
        if pad and negative == raw[1] & 0x80:
            raise DerError("INTEGER with illegal padding", tlv.header)
    return raw


def integer_magnitude(raw: bytes) -> bytes:
    """An INTEGER's absolute value as minimal big-endian bytes (OpenSSL's BN_bn2bin)."""
    value = abs(int.from_bytes(raw, "big", signed=True))
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def check_oid(buf: bytes, tlv: Tlv) -> bytes:
    """An OBJECT IDENTIFIER's content octets, after OpenSSL's `c2i_ASN1_OBJECT` checks."""
    raw = content(buf, tlv)
    if not raw or raw[-1] & 0x80:
        raise DerError("invalid OBJECT IDENTIFIER encoding", tlv.header)
    for i, byte in enumerate(raw):
        if byte == 0x80 and (i == 0 or not raw[i - 1] & 0x80):
            raise DerError("invalid OBJECT IDENTIFIER encoding", tlv.header)
    return raw


def string_bytes(buf: bytes, tlv: Tlv, depth: int = 0) -> bytes:
    """A string's octets: primitive, or the pieces of a constructed (BER) string joined."""
    if not tlv.constructed:
        return content(buf, tlv)
    return b"".join(string_bytes(buf, piece, depth + 1)
                    for piece in children(buf, tlv, depth))


def check_any(buf: bytes, tlv: Tlv, depth: int = 0) -> None:
    """An ASN.1 ANY: checked as the universal type its tag names, where OpenSSL checks it."""
    if tlv.cls != UNIVERSAL:
        return
    if tlv.tag == NULL:
        expect(tlv, NULL, "NULL")
        if tlv.end != tlv.start:
            raise DerError("NULL with content", tlv.header)
    elif tlv.tag == BOOLEAN:
        expect(tlv, BOOLEAN, "BOOLEAN")
        if tlv.end - tlv.start != 1:
            raise DerError("BOOLEAN of wrong length", tlv.header)
    elif tlv.tag == INTEGER:
        check_integer(buf, expect(tlv, INTEGER, "INTEGER"))
    elif tlv.tag == OID:
        check_oid(buf, expect(tlv, OID, "OBJECT IDENTIFIER"))
    elif tlv.tag in (SEQUENCE, SET):
        expect(tlv, tlv.tag, "SEQUENCE")
    elif tlv.constructed:
        string_bytes(buf, tlv, depth)


def _utf8_ok(raw: bytes, width: int) -> bool:
    if width == 1:
        return True
    if width == 0:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    if len(raw) % width:
        return False
    for i in range(0, len(raw), width):
        value = int.from_bytes(raw[i:i + width], "big")
        if 0xD800 <= value <= 0xDFFF or value > 0x10FFFF:
            return False
    return True


def name_value(buf: bytes, tlv: Tlv, depth: int = 0) -> bytes:
    """An X.509 name value as OpenSSL stores it (`ASN1_STRING_get0_data`), after its checks."""
    if tlv.cls != UNIVERSAL or tlv.tag not in NAME_VALUE_TAGS:
        raise DerError("name value of a type OpenSSL does not accept", tlv.header)
    if tlv.tag == SEQUENCE:
        if not tlv.constructed:
            raise DerError("SEQUENCE is not constructed", tlv.header)
        return buf[tlv.header:tlv.next]
    raw = string_bytes(buf, tlv, depth)
    if tlv.tag == BIT_STRING:
        if not raw or raw[0] > 7:
            raise DerError("BIT STRING with a bad unused-bits count", tlv.header)
        return raw[1:]
    width = CANONICAL_WIDTH.get(tlv.tag)
    if width is not None and not _utf8_ok(raw, width):
        raise DerError("name text that does not convert to UTF-8", tlv.header)
    return raw
