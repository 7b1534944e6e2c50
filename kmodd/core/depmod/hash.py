"""kmod's string hash (`shared/hash.c: hash_superfast`), one key at a time or many at once.

depmod's output order depends on it twice: modules missing from modules.order follow the
iteration order of kmod's module-name table, and modules.symbols lists symbols in the
iteration order of its symbol table (buckets in order, keys sorted within a bucket).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_M32 = 0xFFFFFFFF


def kmod_hash(key: bytes) -> int:
    """kmod's `hash_superfast` (Paul Hsieh's SuperFastHash) of a key, as on x86.

    Arithmetic is on unbounded ints, masked to 32 bits only before each right shift (the
    bits above 32 cannot reach the low 32 bits through additions, xors and left shifts).
    """
    n = len(key)
    h = n
    words = n >> 2
    if words:
        halves = iter(struct.unpack_from(f"<{words * 2}H", key))
        for lo, hi in zip(halves, halves, strict=True):
            h += lo
            h = ((h << 16) ^ (hi << 11) ^ h) & _M32
            h += h >> 11
    rem = n & 3
    if rem:
        tail = key[words * 4 :]
        if rem == 3:
            h += tail[0] | tail[1] << 8
            h = (h ^ (h << 16)) & _M32
            h ^= ((tail[2] - 256 if tail[2] > 127 else tail[2]) << 18) & _M32  # signed char
            h += h >> 11
        elif rem == 2:
            h += tail[0] | tail[1] << 8
            h = (h ^ (h << 11)) & _M32
            h += h >> 17
        else:
            h += tail[0] - 256 if tail[0] > 127 else tail[0]  # signed char
            h = (h ^ (h << 10)) & _M32
            h += h >> 1
    h = (h ^ (h << 3)) & _M32
    h += h >> 5
    h = (h ^ (h << 4)) & _M32
    h += h >> 17
    h = (h ^ (h << 25)) & _M32
    h += h >> 6
    return h & _M32


_LANE = 8  # bytes per key in the lane-parallel hash: 32-bit state plus headroom


def kmod_hashes(keys: Sequence[bytes]) -> list[int]:
    """`kmod_hash` of many keys at once: keys of one length share every step, so their
    states are packed into the 64-bit lanes of one big integer and advanced together
    (SIMD within a register). Each step masks the lanes back to 32 bits before bits could
    cross into a neighbour. Keys with bytes above 127 (signed char) take the scalar road."""
    out = [0] * len(keys)
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(len(key), []).append(i)
    for length, members in groups.items():
        blob = b"".join([keys[i] for i in members])
        if length == 0 or not blob.isascii() or len(members) < 4:
            for i in members:
                out[i] = kmod_hash(keys[i])
            continue
        for i, h in zip(members, _lane_hash(blob, length, len(members)), strict=True):
            out[i] = h
    return out


def _lane_hash(blob: bytes, length: int, n: int) -> list[int]:
    mask = int.from_bytes(b"\xff\xff\xff\xff\0\0\0\0" * n, "little")

    def column(offset: int, width: int) -> int:
        lanes = bytearray(_LANE * n)
        lanes[0::_LANE] = blob[offset::length]
        if width == 2:
            lanes[1::_LANE] = blob[offset + 1 :: length]
        return int.from_bytes(lanes, "little")

    h = int.from_bytes(length.to_bytes(_LANE, "little") * n, "little")
    words = length >> 2
    for k in range(words):
        h += column(4 * k, 2)
        h = ((h << 16) ^ (column(4 * k + 2, 2) << 11) ^ h) & mask
        h += (h >> 11) & mask
    rem = length & 3
    at = 4 * words
    if rem == 3:
        h += column(at, 2)
        h = (h ^ (h << 16)) & mask
        h ^= column(at + 2, 1) << 18
        h += (h >> 11) & mask
    elif rem == 2:
        h += column(at, 2)
        h = (h ^ (h << 11)) & mask
        h += (h >> 17) & mask
    elif rem == 1:
        h += column(at, 1)
        h = (h ^ (h << 10)) & mask
        h += (h >> 1) & mask
    h = (h ^ (h << 3)) & mask
    h += (h >> 5) & mask
    h = (h ^ (h << 4)) & mask
    h += (h >> 17) & mask
    h = (h ^ (h << 25)) & mask
    h += (h >> 6) & mask
    h &= mask
    values: list[int] = memoryview(h.to_bytes(_LANE * n, "little")).cast("Q").tolist()
    return values
