"""kmodd.core.depmod.binindex_write: kmod's index files, byte for byte.

Two independent checks: `_reference_index` below builds the file the way kmod's depmod
does it (insert key by key, splitting nodes, then write children before their parent),
and hypothesis compares it with kmodd's sorted-keys builder on random key sets; and a small
reader decodes the files to check what they hold.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodd.core.depmod.binindex_write import (
    INDEX_MAGIC,
    INDEX_VERSION,
    IndexBuilder,
    IndexCharacterError,
    IndexEntry,
    build_index,
)

# -- a reader and a reference writer, for the tests only ----------------------------------


def read_index(data: bytes) -> list[tuple[str, str, int]]:
    """Every (key, value, priority), keys in trie order, values in stored order."""
    magic, version, root = struct.unpack_from(">III", data)
    assert (magic, version) == (INDEX_MAGIC, INDEX_VERSION)
    out: list[tuple[str, str, int]] = []
    todo = [(root, "")]
    while todo:
        word, key = todo.pop()
        off = word & 0x0FFFFFFF
        if word & 0x80000000:
            end = data.index(b"\0", off)
            key += data[off:end].decode()
            off = end + 1
        kids = []
        if word & 0x20000000:
            first, last = data[off], data[off + 1]
            off += 2
            for i in range(last - first + 1):
                (child,) = struct.unpack_from(">I", data, off)
                off += 4
                if child:
                    kids.append((child, key + chr(first + i)))
        if word & 0x40000000:
            (count,) = struct.unpack_from(">I", data, off)
            off += 4
            for _ in range(count):
                (priority,) = struct.unpack_from(">I", data, off)
                end = data.index(b"\0", off + 4)
                out.append((key, data[off + 4 : end].decode(), priority))
                off = end + 1
        todo.extend(reversed(kids))
    return out


class _Node:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.values: list[tuple[int, str]] = []
        self.children: dict[str, _Node] = {}


def _reference_index(entries: list[tuple[str, str, int]]) -> bytes:
    """kmod's algorithm, written plainly: insertion with node splits, post-order output."""
    root = _Node("")
    for key, value, priority in entries:
        node, i = root, 0
        while True:
            j = 0
            while j < len(node.prefix):
                if i + j >= len(key) or node.prefix[j] != key[i + j]:
                    split = _Node(node.prefix[j + 1 :])
                    split.values, split.children = node.values, node.children
                    node.children = {node.prefix[j]: split}
                    node.values = []
                    node.prefix = node.prefix[:j]
                    break
                j += 1
            i += len(node.prefix)
            if i == len(key):
                at = next((k for k, (p, _) in enumerate(node.values) if p >= priority),
                          len(node.values))
                node.values.insert(at, (priority, value))
                break
            ch = key[i]
            if ch not in node.children:
                child = _Node(key[i + 1 :])
                child.values.append((priority, value))
                node.children[ch] = child
                break
            node = node.children[ch]
            i += 1
    out = bytearray(12)

    def write(node: _Node) -> int:
        kids = {ord(c): write(n) for c, n in sorted(node.children.items())}
        word = len(out)
        if node.prefix:
            out.extend(node.prefix.encode() + b"\0")
            word |= 0x80000000
        if kids:
            lo, hi = min(kids), max(kids)
            out.extend(bytes([lo, hi]))
            for c in range(lo, hi + 1):
                out.extend(struct.pack(">I", kids.get(c, 0)))
            word |= 0x20000000
        if node.values:
            out.extend(struct.pack(">I", len(node.values)))
            for priority, value in node.values:
                out.extend(struct.pack(">I", priority) + value.encode() + b"\0")
            word |= 0x40000000
        return word

    out[:12] = struct.pack(">III", INDEX_MAGIC, INDEX_VERSION, write(root))
    return bytes(out)


# -- the format -------------------------------------------------------------------------


def test_an_empty_index_is_a_twelve_byte_header_pointing_past_itself() -> None:
    assert build_index([]) == struct.pack(">III", 0xB007F457, 0x00020001, 12)


def test_one_key_is_a_root_with_one_child_holding_the_rest_of_the_key() -> None:
    data = build_index([IndexEntry("snd", "snd_pcm", 7)])
    # post-order: the child comes first, the root (children only) last
    child = b"nd\0" + struct.pack(">II", 1, 7) + b"snd_pcm\0"
    root = bytes([ord("s"), ord("s")]) + struct.pack(">I", 0xC0000000 | 12)
    assert data == struct.pack(">III", 0xB007F457, 0x00020001,
                               0x20000000 | (12 + len(child))) + child + root


def test_the_root_prefix_stays_empty_even_when_all_keys_share_one() -> None:
    data = build_index([IndexEntry("symbol:a", "m", 0), IndexEntry("symbol:b", "m", 0)])
    (root,) = struct.unpack_from(">I", data, 8)
    assert not root & 0x80000000
    assert data[root & 0x0FFFFFFF :][:2] == b"ss"


def test_values_rise_by_priority_and_equal_priorities_put_the_newest_first() -> None:
    b = IndexBuilder()
    for value, priority in (("a", 5), ("b", 1), ("c", 5), ("d", 3)):
        b.add("key", value, priority)
    assert read_index(b.to_bytes()) == [("key", "b", 1), ("key", "d", 3), ("key", "c", 5),
                                        ("key", "a", 5)]


def test_adding_a_value_twice_is_reported_and_both_are_kept() -> None:
    b = IndexBuilder()
    assert b.add("pci:v*", "mod", 1) is False
    assert b.add("pci:v*", "other", 1) is False
    assert b.add("pci:v*", "mod", 2) is True
    assert [v for _, v, _ in read_index(b.to_bytes())] == ["other", "mod", "mod"]


def test_non_ascii_text_is_refused_with_kmods_message() -> None:
    with pytest.raises(IndexCharacterError) as err:
        IndexBuilder().add("caf\xe9", "m", 0)
    assert str(err.value) == ("Module index: bad character '\xe9'=0xe9 - only 7-bit ASCII "
                              "is supported:\ncaf\xe9\n")


def test_an_empty_key_lives_on_the_root() -> None:
    data = build_index([IndexEntry("", "root-value", 0), IndexEntry("a", "x", 1)])
    assert read_index(data) == [("", "root-value", 0), ("a", "x", 1)]


# -- against kmod's insertion algorithm ------------------------------------------------------

KEYS = st.text(alphabet="ab-_*?[]0123456789:vp", max_size=12)


@settings(max_examples=400)
@given(st.lists(st.tuples(KEYS, st.sampled_from(["m1", "m2", "mod_three"]),
                          st.integers(min_value=0, max_value=4)), max_size=40))
def test_random_indexes_match_kmods_insertion_trie_byte_for_byte(
        entries: list[tuple[str, str, int]]) -> None:
    assert build_index(IndexEntry(*e) for e in entries) == _reference_index(entries)


@settings(max_examples=100)
@given(st.lists(st.tuples(KEYS, st.sampled_from(["m1", "m2"]),
                          st.integers(min_value=0, max_value=4)), max_size=30))
def test_every_value_can_be_read_back(entries: list[tuple[str, str, int]]) -> None:
    stored = read_index(build_index(IndexEntry(*e) for e in entries))
    assert sorted(stored) == sorted(entries)


def test_a_deep_chain_of_keys_does_not_recurse() -> None:
    keys = ["a" * n for n in range(1, 3000)]
    data = build_index(IndexEntry(k, "m", 0) for k in keys)
    assert [k for k, _, _ in read_index(data)] == keys
