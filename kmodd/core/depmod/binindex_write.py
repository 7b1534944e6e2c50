"""Write kmod's binary index files (`modules.*.bin`) byte for byte as kmod 30's depmod does.

The format (libkmod-index.c; all integers 32-bit big-endian):

    magic 0xB007F457, version 0x00020001, root node-offset word
    node: [prefix NUL] [first, last, (last-first+1) child words] [count, (priority, value NUL)*]

A node-offset word holds the node's file offset in its low 28 bits and, in the top nibble,
which parts the node has: PREFIX 0x80000000, VALUES 0x40000000, CHILDS 0x20000000.

The trie is a radix (Patricia) trie over 7-bit ASCII keys. kmod builds it by insertion, but
the result depends only on the set of keys: every node except the root takes as prefix the
longest common prefix of the keys below it, and the root's prefix is always empty. So this
writer sorts the keys and builds the same nodes top-down, much faster in Python.

kmod 30 writes nodes in **post-order** (children in character order, then the node), with
the root last; kmod 34 changed to pre-order. Byte identity with Debian 12 needs post-order.

Values of one key are kept in ascending priority; among equal priorities the value added
last comes first (kmod inserts before the first value whose priority is not smaller).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

INDEX_MAGIC = 0xB007F457
INDEX_VERSION = 0x00020001
INDEX_CHILDMAX = 128
NODE_PREFIX = 0x80000000
NODE_VALUES = 0x40000000
NODE_CHILDS = 0x20000000
HEADER_SIZE = 12

_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")


class IndexCharacterError(ValueError):
    """A key or value with a byte outside 7-bit ASCII, which the format cannot hold."""

    def __init__(self, text: str) -> None:
        bad = next(c for c in text if ord(c) >= INDEX_CHILDMAX)
        super().__init__(
            f"Module index: bad character '{bad}'=0x{ord(bad):x} - only 7-bit ASCII is "
            f"supported:\n{text}\n"
        )
        self.text = text


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One value to store under a key."""

    key: str
    value: str
    priority: int


class IndexBuilder:
    """Collects (key, value, priority) triples and writes the index file."""

    __slots__ = ("_serial", "_values")

    def __init__(self) -> None:
        # key -> list of (priority, -insertion number, value): sorting it gives kmod's order.
        self._values: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self._serial = 0

    def add(self, key: str, value: str, priority: int) -> bool:
        """Add a value; True when the same value was already stored under the key.

        kmod reports such duplicates (`depmod -w`) but stores them anyway.
        Raises IndexCharacterError for non-ASCII text.
        """
        if not key.isascii():
            raise IndexCharacterError(key)
        if not value.isascii():
            raise IndexCharacterError(value)
        bkey = key.encode()
        bvalue = value.encode()
        self._serial += 1
        entry = (priority & 0xFFFFFFFF, -self._serial, bvalue)
        values = self._values.get(bkey)
        if values is None:
            self._values[bkey] = [entry]
            return False
        duplicate = any(v[2] == bvalue for v in values)
        values.append(entry)
        return duplicate

    def add_all(self, entries: Iterable[IndexEntry]) -> None:
        """Add many entries in order."""
        for e in entries:
            self.add(e.key, e.value, e.priority)

    def add_many(self, keys: Sequence[str], values: Sequence[str],
                 priorities: Sequence[int]) -> None:
        """Add entries in order, in bulk (duplicates are stored, not reported).

        Raises IndexCharacterError for non-ASCII text.
        """
        if not ("".join(keys).isascii() and "".join(values).isascii()):
            for pair in zip(keys, values, strict=True):  # the first bad one, as kmod finds it
                for text in pair:
                    if not text.isascii():
                        raise IndexCharacterError(text)
        store = self._values
        serial = self._serial
        for key, value, priority in zip(map(str.encode, keys), map(str.encode, values),
                                        priorities, strict=True):
            serial += 1
            entry = (priority & 0xFFFFFFFF, -serial, value)
            existing = store.get(key)
            if existing is None:
                store[key] = [entry]
            else:
                existing.append(entry)
        self._serial = serial

    def __len__(self) -> int:
        return len(self._values)

    def to_bytes(self) -> bytes:
        """The index file."""
        return _write(self._values)


def _common_end(a: bytes, b: bytes, start: int) -> int:
    """The first index from `start` at which `a` and `b` differ (or the shorter length)."""
    lo, hi = start, min(len(a), len(b))
    if a[start:hi] == b[start:hi]:
        return hi
    hi -= 1  # they differ before hi: binary search on slice equality
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[start:mid] == b[start:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _values_blob(values: list[tuple[int, int, bytes]]) -> bytes:
    parts = [_U32.pack(len(values))]
    for priority, _, value in sorted(values):
        parts.append(_U32.pack(priority) + value + b"\0")
    return b"".join(parts)


#: `>nI` packers for child tables of every possible width.
_CHILD_TABLES = [struct.Struct(f">{n}I") for n in range(INDEX_CHILDMAX + 1)]


def _children_blob(kids: list[tuple[int, int]]) -> bytes:
    first_ch, last_ch = kids[0][0], kids[-1][0]
    table = [0] * (last_ch - first_ch + 1)
    for ch, child in kids:
        table[ch - first_ch] = child
    return bytes((first_ch, last_ch)) + _CHILD_TABLES[len(table)].pack(*table)


class _Frame:
    """A node whose children are being written: keys[lo:hi] share keys[lo][:end], the
    node's prefix is keys[lo][depth:end], `char` is the character that leads to it."""

    __slots__ = ("char", "depth", "end", "hi", "kids", "lo", "next")

    def __init__(self, lo: int, hi: int, depth: int, end: int, start: int, char: int) -> None:
        self.lo = lo
        self.hi = hi
        self.depth = depth
        self.end = end
        self.next = start
        self.char = char
        self.kids: list[tuple[int, int]] = []


def _write(values: dict[bytes, list[tuple[int, int, bytes]]]) -> bytes:
    """Build the trie from the sorted keys and write it in post-order, in one pass."""
    keys = sorted(values)
    parts: list[bytes] = []  # the file after the header, in pieces
    offset = HEADER_SIZE
    if not keys:  # an empty root: no flags, nothing written
        return struct.pack(">III", INDEX_MAGIC, INDEX_VERSION, offset)
    add = parts.append
    pack_single = _TWO_U32.pack
    leaf_word = NODE_PREFIX | NODE_VALUES
    nul = b"\0"
    stack = [_Frame(0, len(keys), 0, 0, 1 if keys[0] == b"" else 0, -1)]
    while True:
        frame = stack[-1]
        i, hi, end = frame.next, frame.hi, frame.end
        if i < hi:
            key = keys[i]
            ch = key[end]
            if i + 1 == hi or keys[i + 1][end] != ch:
                # A leaf: one key, its values, no children (most nodes). Keys sort, so
                # the next key leaving this character means this one is alone.
                frame.next = i + 1
                rest = key[end + 1 :]
                vals = values[key]
                if rest:
                    add(rest)
                    add(nul)
                    word = offset | leaf_word
                    offset += len(rest) + 1
                else:
                    word = offset | NODE_VALUES
                if len(vals) == 1:
                    priority, _, value = vals[0]
                    add(pack_single(1, priority))
                    add(value)
                    add(nul)
                    offset += len(value) + 9
                else:
                    blob = _values_blob(vals)
                    add(blob)
                    offset += len(blob)
                frame.kids.append((ch, word))
                continue
            j = bisect_left(keys, key[:end] + bytes((ch + 1,)), i, hi)
            frame.next = j
            stop = _common_end(key, keys[j - 1], end + 1)
            stack.append(_Frame(i, j, end + 1, stop, i + 1 if len(key) == stop else i, ch))
            continue
        stack.pop()
        key = keys[frame.lo]
        word = offset
        prefix = key[frame.depth : end]
        if prefix:
            add(prefix)
            add(nul)
            offset += len(prefix) + 1
            word |= NODE_PREFIX
        if frame.kids:
            blob = _children_blob(frame.kids)
            add(blob)
            offset += len(blob)
            word |= NODE_CHILDS
        if len(key) == end:
            blob = _values_blob(values[key])
            add(blob)
            offset += len(blob)
            word |= NODE_VALUES
        if not stack:
            return struct.pack(">III", INDEX_MAGIC, INDEX_VERSION, word) + b"".join(parts)
        stack[-1].kids.append((frame.char, word))


def build_index(entries: Iterable[IndexEntry]) -> bytes:
    """The index file holding `entries` (added in the given order)."""
    builder = IndexBuilder()
    builder.add_all(entries)
    return builder.to_bytes()
