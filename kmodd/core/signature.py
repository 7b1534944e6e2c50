"""The signature appended to a kernel module, read the way kmod 30's modinfo reads it.

A signed module ends with (`libkmod/libkmod-signature.c`, `scripts/sign-file.c`):

    [ module ][ signer ][ key id ][ signature ][ struct module_signature ][ magic ]

`struct module_signature` is 12 bytes: algo, hash, id_type, signer_len, key_id_len (u8 each),
3 bytes of padding, sig_len (u32 big-endian). The magic is `~Module signature appended~\\n`.
For `id_type` PKCS#7 (what every current kernel writes) the signature is a DER PKCS#7
SignedData; kmod (built with OpenSSL) reports the first SignerInfo's issuer common name as the
signer, its serial number as the key id, its digest algorithm and its encrypted digest. The
DER reader below is small and strict about lengths; anything it cannot read becomes a
`SignatureError` naming the offset, never an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

SIG_MAGIC = b"~Module signature appended~\n"
MODULE_SIGNATURE = struct.Struct(">BBBBB3xI")

#: `enum pkey_algo`, `enum pkey_hash_algo`, `enum pkey_id_type` (kmod 30).
PKEY_ALGO = ("DSA", "RSA")
PKEY_HASH_ALGO = ("md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3")
PKEY_ID_TYPE = ("PGP", "X509", "PKCS#7")
PKEY_ID_PKCS7 = 2

#: Digest algorithm OIDs (DER content bytes) -> kmod's name.
DIGEST_OIDS: Mapping[bytes, str] = {
    bytes.fromhex("2a864886f70d0204"): "md4",
    bytes.fromhex("2a864886f70d0205"): "md5",
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("2b24030201"): "rmd160",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
    bytes.fromhex("608648016503040204"): "sha224",
    bytes.fromhex("2a811ccf5501831100"): "sm3",
}
#: What kmodd reports for a digest OpenSSL has no kmod name for (kmod itself reads out of
#: bounds there).
UNKNOWN_HASH_ALGO = "unknown"

OID_PKCS7_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")
OID_COMMON_NAME = bytes.fromhex("550403")

#: How deep nested DER may go before the reader calls it hostile.
MAX_DER_DEPTH = 32
#: Bytes per line of a hex value in modinfo's output (`kmod_module_hex_to_str`).
HEX_BYTES_PER_LINE = 20

# Universal tags
_INTEGER, _OCTET_STRING, _NULL, _OID, _SEQUENCE, _SET = 0x02, 0x04, 0x05, 0x06, 0x10, 0x11
_UNIVERSAL, _CONTEXT = 0, 2


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """What modinfo shows about a module's signature. Byte strings are kmod's raw values."""

    id_type: str
    signer: bytes
    key_id: bytes
    hash_algo: str
    signature: bytes
    algo: str | None = None  # the header's algo; kmod leaves it unset for PKCS#7


@dataclass(frozen=True, slots=True)
class NoSignature:
    """The file carries no signature kmod would recognise (why, in words)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SignatureError:
    """A signature is there but cannot be read; `offset` is relative to the PKCS#7 blob."""

    reason: str
    offset: int

    def __str__(self) -> str:
        return f"module signature: {self.reason} (at byte {self.offset} of the PKCS#7 data)"


class _DerError(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class _Tlv(NamedTuple):
    cls: int
    constructed: bool
    tag: int
    start: int  # first content byte
    end: int  # one past the last content byte
    next: int  # first byte after this element (after 00 00 for indefinite lengths)


def _read_tlv(buf: bytes, pos: int, limit: int, depth: int = 0) -> _Tlv:
    if depth > MAX_DER_DEPTH:
        raise _DerError("nesting too deep", pos)
    if pos >= limit:
        raise _DerError("element expected, data ended", pos)
    first = buf[pos]
    cls = first >> 6
    constructed = bool(first & 0x20)
    tag = first & 0x1F
    i = pos + 1
    if tag == 0x1F:
        tag = 0
        for _ in range(4):
            if i >= limit:
                raise _DerError("tag number runs past the data", i)
            b = buf[i]
            i += 1
            tag = tag << 7 | (b & 0x7F)
            if not b & 0x80:
                break
        else:
            raise _DerError("tag number too long", pos)
    if i >= limit:
        raise _DerError("length expected, data ended", i)
    length_byte = buf[i]
    i += 1
    if length_byte < 0x80:
        end = i + length_byte
    elif length_byte == 0x80:
        if not constructed:
            raise _DerError("indefinite length on a primitive element", pos)
        child = i
        while True:
            if child + 2 <= limit and buf[child] == 0 and buf[child + 1] == 0:
                return _Tlv(cls, constructed, tag, i, child, child + 2)
            child = _read_tlv(buf, child, limit, depth + 1).next
    else:
        count = length_byte & 0x7F
        if count > 4:
            raise _DerError("length field wider than 4 bytes", i - 1)
        if i + count > limit:
            raise _DerError("length field runs past the data", i)
        end = i + int.from_bytes(buf[i:i + count], "big") + count
        i += count
    if end > limit:
        raise _DerError(f"element claims {end - i} bytes, {limit - i} are left", pos)
    return _Tlv(cls, constructed, tag, i, end, end)


def _children(buf: bytes, tlv: _Tlv, depth: int) -> list[_Tlv]:
    if not tlv.constructed:
        raise _DerError("constructed element expected", tlv.start)
    out: list[_Tlv] = []
    pos = tlv.start
    while pos < tlv.end:
        child = _read_tlv(buf, pos, tlv.end, depth + 1)
        out.append(child)
        pos = child.next
    return out


def _expect(tlv: _Tlv, cls: int, tag: int, what: str) -> _Tlv:
    if tlv.cls != cls or tlv.tag != tag:
        raise _DerError(f"{what} expected", tlv.start)
    return tlv


def _take(items: list[_Tlv], index: int, what: str, at: int) -> _Tlv:
    if index >= len(items):
        raise _DerError(f"{what} missing", at)
    return items[index]


def _bn_bytes(content: bytes) -> bytes:
    """An INTEGER's magnitude, big-endian, without leading zeros (OpenSSL's BN_bn2bin)."""
    if not content:
        return b""
    value = int.from_bytes(content, "big", signed=True)
    value = -value if value < 0 else value
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def _issuer_string(buf: bytes, name: _Tlv, depth: int) -> bytes | None:
    """The issuer's common name, as kmod's `x509_name_to_str` finds it.

    kmod walks the entries and stops at the first commonName; when there is none it returns
    the last entry's value, and None only for an empty name. The value is a C string.
    """
    entries: list[_Tlv] = []
    for rdn in _children(buf, _expect(name, _UNIVERSAL, _SEQUENCE, "Name"), depth):
        for atv in _children(buf, _expect(rdn, _UNIVERSAL, _SET, "RelativeDistinguishedName"),
                             depth + 1):
            entries.append(_expect(atv, _UNIVERSAL, _SEQUENCE, "AttributeTypeAndValue"))
    chosen: _Tlv | None = None
    for entry in entries:
        chosen = entry
        parts = _children(buf, entry, depth + 2)
        oid = _expect(_take(parts, 0, "attribute type", entry.start), _UNIVERSAL, _OID,
                      "attribute type")
        if buf[oid.start:oid.end] == OID_COMMON_NAME:
            break
    if chosen is None:
        return None
    parts = _children(buf, chosen, depth + 2)
    value = _take(parts, 1, "attribute value", chosen.start)
    raw = buf[value.start:value.end]
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def _parse_pkcs7(blob: bytes, id_type: str) -> SignatureInfo:
    top = _read_tlv(blob, 0, len(blob))
    content_info = _children(blob, _expect(top, _UNIVERSAL, _SEQUENCE, "ContentInfo"), 0)
    ctype = _expect(_take(content_info, 0, "contentType", top.start), _UNIVERSAL, _OID,
                    "contentType")
    if blob[ctype.start:ctype.end] != OID_PKCS7_SIGNED_DATA:
        raise _DerError("not a PKCS#7 SignedData", ctype.start)
    explicit = _expect(_take(content_info, 1, "content", top.start), _CONTEXT, 0, "[0] content")
    inner = _children(blob, explicit, 1)
    signed = _children(blob, _expect(_take(inner, 0, "SignedData", explicit.start),
                                     _UNIVERSAL, _SEQUENCE, "SignedData"), 2)
    _expect(_take(signed, 0, "version", explicit.start), _UNIVERSAL, _INTEGER, "version")
    _expect(_take(signed, 1, "digestAlgorithms", explicit.start), _UNIVERSAL, _SET,
            "digestAlgorithms")
    _expect(_take(signed, 2, "contentInfo", explicit.start), _UNIVERSAL, _SEQUENCE,
            "contentInfo")
    index = 3
    while index < len(signed) and signed[index].cls == _CONTEXT and signed[index].tag in (0, 1):
        index += 1  # certificates [0], crls [1]
    signer_infos = _expect(_take(signed, index, "signerInfos", explicit.start), _UNIVERSAL,
                           _SET, "signerInfos")
    infos = _children(blob, signer_infos, 3)
    first = _expect(_take(infos, 0, "SignerInfo", signer_infos.start), _UNIVERSAL, _SEQUENCE,
                    "SignerInfo")
    fields = _children(blob, first, 4)
    _expect(_take(fields, 0, "SignerInfo version", first.start), _UNIVERSAL, _INTEGER,
            "SignerInfo version")
    issuer_serial = _children(blob, _expect(
        _take(fields, 1, "issuerAndSerialNumber", first.start), _UNIVERSAL, _SEQUENCE,
        "issuerAndSerialNumber"), 5)
    issuer = _take(issuer_serial, 0, "issuer", first.start)
    serial = _expect(_take(issuer_serial, 1, "serialNumber", first.start), _UNIVERSAL, _INTEGER,
                     "serialNumber")
    digest_alg = _children(blob, _expect(_take(fields, 2, "digestAlgorithm", first.start),
                                         _UNIVERSAL, _SEQUENCE, "digestAlgorithm"), 5)
    digest_oid = _expect(_take(digest_alg, 0, "digest OID", first.start), _UNIVERSAL, _OID,
                         "digest OID")
    index = 3
    if index < len(fields) and fields[index].cls == _CONTEXT and fields[index].tag == 0:
        index += 1  # authenticatedAttributes
    _expect(_take(fields, index, "digestEncryptionAlgorithm", first.start), _UNIVERSAL,
            _SEQUENCE, "digestEncryptionAlgorithm")
    digest = _take(fields, index + 1, "encryptedDigest", first.start)
    _expect(digest, _UNIVERSAL, _OCTET_STRING, "encryptedDigest")
    if digest.constructed:
        raise _DerError("constructed encryptedDigest", digest.start)
    signer = _issuer_string(blob, issuer, 5)
    return SignatureInfo(
        id_type=id_type,
        signer=signer or b"",
        key_id=_bn_bytes(blob[serial.start:serial.end]),
        hash_algo=DIGEST_OIDS.get(blob[digest_oid.start:digest_oid.end], UNKNOWN_HASH_ALGO),
        signature=blob[digest.start:digest.end],
    )


def parse_module_signature(data: bytes) -> SignatureInfo | NoSignature | SignatureError:
    """Read the signature appended to a module image (decompressed), as kmod 30 does."""
    if len(data) < len(SIG_MAGIC) or not data.endswith(SIG_MAGIC):
        return NoSignature("no '~Module signature appended~' marker at the end")
    size = len(data) - len(SIG_MAGIC)
    if size < MODULE_SIGNATURE.size:
        return NoSignature("marker present but no room for struct module_signature")
    size -= MODULE_SIGNATURE.size
    algo, hash_, id_type, signer_len, key_id_len, sig_len = MODULE_SIGNATURE.unpack_from(
        data, size)
    if algo >= len(PKEY_ALGO) or hash_ >= len(PKEY_HASH_ALGO) or id_type >= len(PKEY_ID_TYPE):
        return NoSignature(f"unknown algorithm numbers in struct module_signature "
                           f"(algo {algo}, hash {hash_}, id_type {id_type})")
    if sig_len == 0 or size < signer_len + key_id_len + sig_len:
        return NoSignature(f"struct module_signature claims {sig_len} signature bytes "
                           f"that the file does not hold")
    sig_start = size - sig_len
    if id_type == PKEY_ID_PKCS7:
        try:
            return _parse_pkcs7(data[sig_start:size], PKEY_ID_TYPE[id_type])
        except _DerError as err:
            return SignatureError(err.reason, err.offset)
    key_start = sig_start - key_id_len
    signer_start = key_start - signer_len
    return SignatureInfo(
        id_type=PKEY_ID_TYPE[id_type],
        signer=data[signer_start:key_start],
        key_id=data[key_start:sig_start],
        hash_algo=PKEY_HASH_ALGO[hash_],
        signature=data[sig_start:size],
        algo=PKEY_ALGO[algo],
    )


def hex_colon(value: bytes) -> bytes:
    """`01:AB:...`, with a newline and two tabs after every 20 bytes (modinfo's layout)."""
    step = HEX_BYTES_PER_LINE
    lines = [value[i:i + step].hex(":").upper() for i in range(0, len(value), step)]
    return ":\n\t\t".join(lines).encode("ascii")


def modinfo_fields(info: SignatureInfo) -> tuple[tuple[bytes, bytes], ...]:
    """The key/value pairs modinfo appends for a signature, in kmod's order."""
    return (
        (b"sig_id", info.id_type.encode()),
        (b"signer", info.signer),
        (b"sig_key", hex_colon(info.key_id)),
        (b"sig_hashalgo", info.hash_algo.encode()),
        (b"signature", hex_colon(info.signature)),
    )
