"""The signature appended to a kernel module, read the way kmod 30's modinfo reads it.

A signed module ends with (`libkmod/libkmod-signature.c`, `scripts/sign-file.c`):

    [ module ][ signer ][ key id ][ signature ][ struct module_signature ][ magic ]

`struct module_signature` is 12 bytes: algo, hash, id_type, signer_len, key_id_len (u8 each),
3 bytes of padding, sig_len (u32 big-endian). The magic is `~Module signature appended~\\n`.
For `id_type` PKCS#7 (what every current kernel writes) the signature is a DER PKCS#7
SignedData; Debian's kmod (30+20221128, built with OpenSSL) reports the first SignerInfo's
issuer common name as the signer, its serial number as the key id, its digest algorithm and
its encrypted digest. The DER is read with `kmodd.core.modfile.der`, which refuses what OpenSSL
refuses; anything it cannot read becomes a `SignatureError` naming the offset, never an
exception.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from kmodd.core.modfile import der
from kmodd.core.modfile.der import DerError, Tlv


class Buffer(Protocol):
    """What parse_module_signature reads: bytes, or a mapping of the module file."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


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
    bytes.fromhex("2a811ccf55018311"): "sm3",
}

OID_PKCS7_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")
OID_PKCS7_DATA = bytes.fromhex("2a864886f70d010701")
OID_COMMON_NAME = bytes.fromhex("550403")

#: Bytes per line of a hex value in modinfo's output (`kmod_module_hex_to_str`).
HEX_BYTES_PER_LINE = 20


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """What modinfo shows about a module's signature. Byte strings are kmod's raw values."""

    id_type: str
    signer: bytes
    key_id: bytes
    hash_algo: str
    signature: bytes
    algo: str | None = None  # the header's algo; kmod leaves it unset for PKCS#7

    def _replace_signature(self, signature: bytes) -> SignatureInfo:
        return SignatureInfo(self.id_type, self.signer, self.key_id, self.hash_algo,
                             signature, self.algo)


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


def _fields(buf: bytes, seq: Tlv, what: str, depth: int) -> list[Tlv]:
    return der.children(buf, der.expect(seq, der.SEQUENCE, what), depth)


def _algorithm(buf: bytes, tlv: Tlv, what: str, depth: int) -> bytes:
    """An AlgorithmIdentifier (OID and optional parameters); returns the OID."""
    parts = _fields(buf, tlv, what, depth)
    if not 1 <= len(parts) <= 2:
        raise DerError(f"{what} has {len(parts)} fields", tlv.header)
    oid = der.check_oid(buf, der.expect(parts[0], der.OID, f"{what} OID"))
    if len(parts) == 2:
        der.check_any(buf, parts[1], depth + 1)
    return oid


def _attributes(buf: bytes, tlv: Tlv, depth: int) -> None:
    """[n] IMPLICIT SET OF Attribute { type OID, values SET OF ANY }."""
    for attr in der.children(buf, tlv, depth):
        parts = _fields(buf, attr, "Attribute", depth + 1)
        if len(parts) != 2:
            raise DerError("Attribute needs a type and values", attr.header)
        der.check_oid(buf, der.expect(parts[0], der.OID, "attribute type"))
        for value in der.children(buf, der.expect(parts[1], der.SET, "attribute values"),
                                  depth + 2):
            der.check_any(buf, value, depth + 3)


def _name(buf: bytes, tlv: Tlv, depth: int) -> list[tuple[bytes, bytes]]:
    """An X.509 Name: its (attribute OID, value) entries, flattened in order."""
    entries: list[tuple[bytes, bytes]] = []
    for rdn in _fields(buf, tlv, "Name", depth):
        for atv in der.children(buf, der.expect(rdn, der.SET, "RelativeDistinguishedName"),
                                depth + 1):
            parts = _fields(buf, atv, "AttributeTypeAndValue", depth + 2)
            if len(parts) != 2:
                raise DerError("AttributeTypeAndValue needs a type and a value", atv.header)
            oid = der.check_oid(buf, der.expect(parts[0], der.OID, "attribute type"))
            entries.append((oid, der.name_value(buf, parts[1], depth + 3)))
    return entries


def _issuer_string(entries: list[tuple[bytes, bytes]]) -> bytes | None:
    """The signer as kmod's `x509_name_to_str` picks it.

    kmod stops at the first commonName; when there is none it falls out of its loop holding
    the last entry, so that entry's value is used; an empty name gives nothing. The value is
    a C string (cut at a NUL).
    """
    if not entries:
        return None
    chosen = next((value for oid, value in entries if oid == OID_COMMON_NAME), entries[-1][1])
    nul = chosen.find(b"\0")
    return chosen if nul < 0 else chosen[:nul]


class _Signer(NamedTuple):
    issuer: list[tuple[bytes, bytes]]
    serial: bytes
    digest_oid: bytes
    encrypted_digest: bytes
    digest_span: tuple[int, int] | None  # where the digest's octets sit, when primitive


def _signer_info(buf: bytes, tlv: Tlv, depth: int) -> _Signer:
    fields = _fields(buf, tlv, "SignerInfo", depth)
    at = tlv.header

    def field(i: int, what: str) -> Tlv:
        if i >= len(fields):
            raise DerError(f"SignerInfo {what} missing", at)
        return fields[i]

    der.check_integer(buf, der.expect(field(0, "version"), der.INTEGER, "SignerInfo version"))
    issuer_serial = _fields(buf, field(1, "issuerAndSerialNumber"), "issuerAndSerialNumber",
                            depth + 1)
    if len(issuer_serial) != 2:
        raise DerError("issuerAndSerialNumber needs an issuer and a serial", fields[1].header)
    issuer = _name(buf, issuer_serial[0], depth + 2)
    serial = der.check_integer(buf, der.expect(issuer_serial[1], der.INTEGER, "serialNumber"))
    digest_oid = _algorithm(buf, field(2, "digestAlgorithm"), "digestAlgorithm", depth + 1)
    i = 3
    if field(i, "digestEncryptionAlgorithm").cls == der.CONTEXT and fields[i].tag == 0:
        _attributes(buf, fields[i], depth + 1)
        i += 1
    _algorithm(buf, field(i, "digestEncryptionAlgorithm"), "digestEncryptionAlgorithm",
               depth + 1)
    digest = der.expect(field(i + 1, "encryptedDigest"), der.OCTET_STRING, "encryptedDigest")
    i += 2
    if i < len(fields) and fields[i].cls == der.CONTEXT and fields[i].tag == 1:
        _attributes(buf, fields[i], depth + 1)
        i += 1
    if i != len(fields):
        raise DerError("SignerInfo has extra fields", fields[i].header)
    span = None if digest.constructed else (digest.start, digest.end)
    return _Signer(issuer, serial, digest_oid, der.string_bytes(buf, digest, depth + 1), span)


def _content_info(buf: bytes, tlv: Tlv, depth: int) -> tuple[bytes, Tlv | None]:
    """ContentInfo { contentType, [0] EXPLICIT content OPTIONAL }: the type and the content."""
    parts = _fields(buf, tlv, "ContentInfo", depth)
    if not 1 <= len(parts) <= 2:
        raise DerError(f"ContentInfo has {len(parts)} fields", tlv.header)
    ctype = der.check_oid(buf, der.expect(parts[0], der.OID, "contentType"))
    if len(parts) == 1:
        return ctype, None
    explicit = der.expect(parts[1], 0, "[0] content", der.CONTEXT)
    inner = der.children(buf, explicit, depth + 1)
    if len(inner) != 1:
        raise DerError("[0] content must hold exactly one element", explicit.header)
    if ctype == OID_PKCS7_DATA:
        der.string_bytes(buf, der.expect(inner[0], der.OCTET_STRING, "data"), depth + 2)
    return ctype, inner[0]


class _Template(NamedTuple):
    """A checked signature with its digest cut out: the rest of a blob that matches it
    byte for byte needs no second check (every module signed with one key shares it)."""

    prefix: bytes
    suffix: bytes
    info: SignatureInfo


#: Checked signature layouts remembered per blob length (modules signed with the same key
#: differ only in the digest's octets).
SIGNATURE_TEMPLATES_PER_LENGTH = 4
_templates: dict[int, list[_Template]] = {}


def _from_template(blob: bytes) -> SignatureInfo | None:
    for template in _templates.get(len(blob), ()):
        if blob.startswith(template.prefix) and blob.endswith(template.suffix):
            end = len(blob) - len(template.suffix)
            return template.info._replace_signature(blob[len(template.prefix):end])
    return None


def _remember(blob: bytes, info: SignatureInfo, span: tuple[int, int] | None) -> None:
    if span is None:
        return
    known = _templates.setdefault(len(blob), [])
    if len(known) >= SIGNATURE_TEMPLATES_PER_LENGTH:
        known.pop(0)
    known.append(_Template(blob[:span[0]], blob[span[1]:], info))


def _parse_pkcs7(blob: bytes, id_type: str) -> SignatureInfo:
    known = _from_template(blob)
    if known is not None:
        return known
    top = der.read(blob, 0, len(blob))
    ctype, signed_tlv = _content_info(blob, top, 0)
    if ctype != OID_PKCS7_SIGNED_DATA:
        raise DerError("not a PKCS#7 SignedData", top.header)
    if signed_tlv is None:
        raise DerError("SignedData content missing", top.header)
    signed = _fields(blob, signed_tlv, "SignedData", 2)
    at = signed_tlv.header

    def field(i: int, what: str) -> Tlv:
        if i >= len(signed):
            raise DerError(f"SignedData {what} missing", at)
        return signed[i]

    der.check_integer(blob, der.expect(field(0, "version"), der.INTEGER, "version"))
    for alg in der.children(blob, der.expect(field(1, "digestAlgorithms"), der.SET,
                                             "digestAlgorithms"), 3):
        _algorithm(blob, alg, "digest algorithm", 4)
    _content_info(blob, field(2, "contentInfo"), 3)
    i = 3
    for tag in (0, 1):  # certificates [0], crls [1]: OpenSSL parses them; kmodd only skips
        if field(i, "signerInfos").cls == der.CONTEXT and signed[i].tag == tag:
            der.children(blob, signed[i], 3)
            i += 1
    infos = der.children(blob, der.expect(field(i, "signerInfos"), der.SET, "signerInfos"), 3)
    if i + 1 != len(signed):
        raise DerError("SignedData has extra fields", signed[i + 1].header)
    signers = [_signer_info(blob, info, 4) for info in infos]
    if not signers:
        raise DerError("no SignerInfo", signed[i].header)
    first = signers[0]
    hash_algo = DIGEST_OIDS.get(first.digest_oid)
    if hash_algo is None:
        # Debian's kmod (30+20221128) has "do not crash on unknown signature algorithm":
        # such a signature is not shown at all.
        raise DerError("digest algorithm kmod does not know", infos[0].header)
    info = SignatureInfo(
        id_type=id_type,
        signer=_issuer_string(first.issuer) or b"",
        key_id=der.integer_magnitude(first.serial),
        hash_algo=hash_algo,
        signature=first.encrypted_digest,
    )
    if len(signers) == 1:
        _remember(blob, info, first.digest_span)
    return info


def parse_module_signature(data: Buffer) -> SignatureInfo | NoSignature | SignatureError:
    """Read the signature appended to a module image (decompressed), as kmod 30 does.

    `data` may be any buffer that slices to bytes (bytes, or a mapped file): only its tail
    is looked at.
    """
    if len(data) < len(SIG_MAGIC) or data[-len(SIG_MAGIC):] != SIG_MAGIC:
        return NoSignature("no '~Module signature appended~' marker at the end")
    size = len(data) - len(SIG_MAGIC)
    if size < MODULE_SIGNATURE.size:
        return NoSignature("marker present but no room for struct module_signature")
    size -= MODULE_SIGNATURE.size
    algo, hash_, id_type, signer_len, key_id_len, sig_len = MODULE_SIGNATURE.unpack(
        data[size:size + MODULE_SIGNATURE.size])
    if algo >= len(PKEY_ALGO) or hash_ >= len(PKEY_HASH_ALGO) or id_type >= len(PKEY_ID_TYPE):
        return NoSignature(f"unknown algorithm numbers in struct module_signature "
                           f"(algo {algo}, hash {hash_}, id_type {id_type})")
    if sig_len == 0 or size < signer_len + key_id_len + sig_len:
        return NoSignature(f"struct module_signature claims {sig_len} signature bytes "
                           f"that the file does not hold")
    sig_start = size - sig_len
    if id_type == PKEY_ID_PKCS7:
        try:
            return _parse_pkcs7(bytes(data[sig_start:size]), PKEY_ID_TYPE[id_type])
        except DerError as err:
            return SignatureError(err.reason, err.offset)
    key_start = sig_start - key_id_len
    signer_start = key_start - signer_len
    return SignatureInfo(
        id_type=PKEY_ID_TYPE[id_type],
        signer=bytes(data[signer_start:key_start]),
        key_id=bytes(data[key_start:sig_start]),
        hash_algo=PKEY_HASH_ALGO[hash_],
        signature=bytes(data[sig_start:size]),
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
