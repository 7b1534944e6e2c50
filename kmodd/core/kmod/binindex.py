"""kmod's binary index files (`modules.*.bin`): read them the way libkmod does.

The format (libkmod-index.c): a big-endian header (magic 0xB007F457, version with major 2,
root node word), then a radix trie over 7-bit ASCII. A node word carries flags in its top
bits and the node's file offset in the low 28 bits; a node holds an optional NUL-ended prefix,
an optional child table indexed by `char - first`, and an optional list of (priority, value)
pairs kept sorted by priority. Offsets are absolute, so pre-order (kmod >= 34) and post-order
(older depmod) files read alike.

`BinIndex` answers the two questions libkmod asks of an index, with libkmod's exact results:
`search` (exact key, first value) and `search_wild` (keys are fnmatch patterns, the query is
literal; every match, ordered by priority as libkmod's `add_value` orders them). `items`
decodes the whole trie once, for the in-memory snapshot. Every read is bounds-checked: a
damaged file raises `IndexFileError` naming the file, the offset and what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import compress
from typing import NamedTuple

from kmodd.core.kmod.glob import match

INDEX_MAGIC = 0xB007F457
INDEX_VERSION_MAJOR = 2
HEADER_SIZE = 12

NODE_PREFIX = 0x80000000
NODE_VALUES = 0x40000000
NODE_CHILDS = 0x20000000
NODE_FLAGS = 0xF0000000
NODE_OFFSET = 0x0FFFFFFF

CHILD_MAX = 128  # 7-bit ASCII
WILD_CHILDREN = ("*", "?", "[")

_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">III")
#: Called for each subtree a wildcard lookup meets: (word, skip, pattern, subkey, found),
#: see `BinIndex._wild_all`.
SubtreeVisitor = Callable[[int, int, str, str, list[tuple[int, int, str]]], None]


class IndexFileError(ValueError):
    """A damaged index file: which file, where, and what is wrong.

    `kind` tells the header problems libkmod itself reports ("short", "magic", "version")
    from damage deeper in the trie ("structure"); `found` is the bad magic or major version.
    """

    def __init__(self, path: str, offset: int, reason: str, kind: str = "structure",
                 found: int = 0) -> None:
        super().__init__(f"{path}: offset {offset:#x}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason
        self.kind = kind
        self.found = found


class Node(NamedTuple):
    """One decoded trie node."""

    offset: int
    prefix: str
    first: int
    children: tuple[int, ...]  # node words, indexed by char - first; 0 means none
    values: tuple[tuple[int, str], ...]  # (priority, value) in file order

    def child(self, ch: str) -> int:
        i = ord(ch) - self.first
        if 0 <= i < len(self.children):
            return self.children[i]
        return 0


class BinIndex:
    """A parsed view of one `.bin` index held in memory (bytes or an mmap)."""

    __slots__ = ("_buf", "_size", "path", "root", "version")

    def __init__(self, data: bytes, path: str) -> None:
        self._buf = data
        self._size = len(data)
        self.path = path
        if self._size < HEADER_SIZE:
            raise IndexFileError(
                path, 0, f"file is {self._size} bytes, shorter than the header", "short"
            )
        magic, version, root = _HEADER.unpack_from(data, 0)
        if magic != INDEX_MAGIC:
            raise IndexFileError(
                path, 0, f"bad magic {magic:#010x} (an index starts with {INDEX_MAGIC:#010x})",
                "magic", magic,
            )
        if version >> 16 != INDEX_VERSION_MAJOR:
            raise IndexFileError(
                path, 4, f"unsupported index version {version >> 16}.{version & 0xFFFF}",
                "version", version >> 16,
            )
        self.version = version
        self.root = root

    # -- nodes -----------------------------------------------------------------------------

    def node(self, word: int) -> Node:
        """Decode the node a node word points to."""
        buf = self._buf
        size = self._size
        off = word & NODE_OFFSET
        start = off
        if not word & NODE_FLAGS:
            # Nothing is read for a node without prefix, children or values (an empty
            # index's root points just past the header, at the end of the file).
            return Node(start, "", 0, (), ())
        if off < HEADER_SIZE or off >= size:
            raise IndexFileError(self.path, off, "node offset outside the file")
        prefix = ""
        if word & NODE_PREFIX:
            end = buf.find(b"\0", off)
            if end < 0:
                raise IndexFileError(self.path, off, "node prefix runs past the end of the file")
            raw = buf[off:end]
            if not raw.isascii():
                raise IndexFileError(self.path, off, "node prefix is not 7-bit ASCII")
            prefix = raw.decode("ascii")
            off = end + 1
        first = 0
        children: tuple[int, ...] = ()
        if word & NODE_CHILDS:
            if off + 2 > size:
                raise IndexFileError(self.path, off, "child table runs past the end of the file")
            first = buf[off]
            last = buf[off + 1]
            if last >= CHILD_MAX or first > last:
                raise IndexFileError(
                    self.path, off, f"child range {first:#x}..{last:#x} is not 7-bit ASCII"
                )
            n = last - first + 1
            if off + 2 + 4 * n > size:
                raise IndexFileError(self.path, off, "child table runs past the end of the file")
            children = struct.unpack_from(f">{n}I", buf, off + 2)
            off += 2 + 4 * n
        values: tuple[tuple[int, str], ...] = ()
        if word & NODE_VALUES:
            if off + 4 > size:
                raise IndexFileError(self.path, off, "value count runs past the end of the file")
            (count,) = _U32.unpack_from(buf, off)
            off += 4
            out = []
            for _ in range(count):
                if off + 4 > size:
                    raise IndexFileError(self.path, off, "value runs past the end of the file")
                (prio,) = _U32.unpack_from(buf, off)
                end = buf.find(b"\0", off + 4)
                if end < 0:
                    raise IndexFileError(self.path, off, "value runs past the end of the file")
                raw = buf[off + 4 : end]
                if not raw.isascii():
                    raise IndexFileError(self.path, off + 4, "value is not 7-bit ASCII")
                out.append((prio, raw.decode("ascii")))
                off = end + 1
            values = tuple(out)
        return Node(start, prefix, first, children, values)

    # -- libkmod's lookups -----------------------------------------------------------------

    def search(self, key: str) -> str | None:
        """Exact lookup: the first (lowest priority) value of `key`, or None.

        Walks the mapped bytes directly (libkmod's index_mm_search): a lookup touches only
        the nodes on the key's path, so an index can be used without decoding it.
        """
        try:
            raw = key.encode("latin-1")
        except UnicodeEncodeError:
            return None  # not a byte string at all: no 7-bit index holds it
        try:
            return self._search(raw)
        except (IndexError, struct.error, UnicodeDecodeError, ValueError) as e:
            if isinstance(e, IndexFileError):
                raise
            raise IndexFileError(self.path, 0, f"damaged index ({e})") from e

    def _search(self, key: bytes) -> str | None:
        buf = self._buf
        word = self.root
        i = 0
        n = len(key)
        for _ in range(n + 2):  # each step consumes a key byte: a loop cannot go on
            if not word & NODE_OFFSET:
                return None
            off = word & NODE_OFFSET
            if word & NODE_PREFIX:
                end = buf.find(b"\0", off)
                if end < 0:
                    raise IndexFileError(self.path, off, "node prefix runs past the file's end")
                plen = end - off
                if key[i : i + plen] != buf[off:end]:
                    return None
                i += plen
                off = end + 1
            first = last = 0
            children = 0
            if word & NODE_CHILDS:
                first = buf[off]
                last = buf[off + 1]
                children = off + 2
                off += 2 + 4 * (last - first + 1)
            if i == n:
                if not word & NODE_VALUES or not _U32.unpack_from(buf, off)[0]:
                    return None
                end = buf.find(b"\0", off + 8)
                if end < 0:
                    raise IndexFileError(self.path, off, "value runs past the end of the file")
                return buf[off + 8 : end].decode("ascii")
            c = key[i]
            i += 1
            if not children or c < first or c > last:
                return None
            (word,) = _U32.unpack_from(buf, children + 4 * (c - first))
        raise IndexFileError(self.path, word & NODE_OFFSET, "trie loops back on itself")

    def search_wild(self, key: str) -> list[tuple[int, str]]:
        """Wildcard lookup: every value whose key pattern matches `key`, in libkmod's order."""
        found: list[tuple[int, int, str]] = []  # (priority, -insertion, value)
        self.wild_descend(key, self._wild_all, found)
        found.sort()
        return [(prio, value) for prio, _, value in found]

    def wild_descend(self, key: str, subtree: SubtreeVisitor,
                     found: list[tuple[int, int, str]]) -> None:
        """libkmod's walk for a wildcard lookup: along `key`, every subtree that starts at a
        wildcard goes to `subtree(word, skip, pattern, subkey, found)` (see `_wild_all`) in
        the order the walk meets it, and the values of the key itself go to `found` last."""
        word = self.root
        i = 0
        steps = 0
        while word & NODE_OFFSET:
            node = self.node(word)
            steps += 1
            if steps > len(key) + 2:
                raise IndexFileError(self.path, node.offset, "trie loops back on itself")
            p = node.prefix
            for j, ch in enumerate(p):
                if ch in "*?[":
                    subtree(word, j, "", key[i + j :], found)
                    return
                if i + j >= len(key) or ch != key[i + j]:
                    return
            i += len(p)
            for wc in WILD_CHILDREN:
                child = node.child(wc)
                if child:
                    subtree(child, 0, wc, key[i:], found)
            if i == len(key):
                for prio, value in node.values:
                    found.append((prio, -len(found), value))
                return
            word = node.child(key[i])
            i += 1

    def _wild_all(
        self, word: int, skip: int, pattern: str, subkey: str,
        found: list[tuple[int, int, str]],
    ) -> None:
        """Every pattern of a subtree below a wildcard, tried against the rest of the key.

        The subtree is the node at `word` with the first `skip` characters of its prefix
        left out, reached by the characters `pattern`; its keys all start with a wildcard.
        libkmod visits the subtree children first (in character order), then the node, so
        the patterns are taken in that order: sorting keys with a sentinel above every
        character appended gives exactly it (a node's values keep their file order).
        """
        scan_subtree(self.subtree_items(word, pattern, skip), subkey, found)

    def subtree_items(self, word: int, pattern: str, skip: int
                      ) -> Iterator[tuple[str, int, str]]:
        """(key, priority, value) of a subtree (see `_wild_all`), in pre-order."""
        return self._checked_decode(word, pattern, skip)

    # -- whole-index reads -----------------------------------------------------------------

    def dump(self) -> Iterator[tuple[str, str]]:
        """Every (key, value) in trie order, as `modprobe -c` prints the indexes."""
        for key, _prio, value in self.items():
            yield key, value

    def items(self) -> list[tuple[str, int, str]]:
        """Decode every (key, priority, value): keys in byte order, values in file order."""
        return list(self.iter_items())

    def iter_items(self) -> Iterator[tuple[str, int, str]]:
        """`items()` one at a time: a consumer that keeps little of each item (the alias
        index) never holds the whole decoded file at once."""
        if not self.root & NODE_OFFSET:
            return iter(())
        return self._checked_decode(self.root, "", 0)

    def _checked_decode(self, top: int, start_key: str, skip: int
                        ) -> Iterator[tuple[str, int, str]]:
        """`_decode`, with any damage reported as IndexFileError naming the spot."""
        try:
            yield from self._decode(top, start_key, skip)
        except (IndexError, struct.error, UnicodeDecodeError, ValueError) as e:
            if isinstance(e, IndexFileError):
                raise
            # Find the exact spot with the careful decoder; it names the offset and reason.
            self._walk_checked()
            raise IndexFileError(self.path, 0, f"damaged index ({e})") from e

    def _decode(self, top: int, start_key: str, skip: int) -> Iterator[tuple[str, int, str]]:
        """(key, priority, value) of the subtree at node word `top`, in pre-order.

        `start_key` is the key leading to it; the first `skip` characters of its own prefix
        are left out (a walk that stopped inside the prefix already has them).
        """
        buf = self._buf
        find = buf.find
        unpack_from = struct.unpack_from
        u32 = _U32.unpack_from
        visited = 0
        limit = self._size  # a valid trie has fewer nodes than bytes
        stack: list[tuple[int, str]] = [(top, start_key)]
        pop = stack.pop
        push = stack.append
        extend = stack.extend
        while stack:
            word, key = pop()
            visited += 1
            if visited > limit:
                raise IndexFileError(self.path, word & NODE_OFFSET, "trie loops back on itself")
            off = word & NODE_OFFSET
            if off < HEADER_SIZE and word & NODE_FLAGS:
                raise IndexFileError(self.path, off, "node offset outside the file")
            if word & NODE_PREFIX:
                end = find(b"\0", off)
                if end < 0:
                    raise IndexFileError(self.path, off, "node prefix runs past the file's end")
                if skip:
                    key += buf[off + skip : end].decode("ascii")
                    skip = 0
                else:
                    key += buf[off:end].decode("ascii")
                off = end + 1
            if word & NODE_CHILDS:
                first = buf[off]
                n = buf[off + 1] - first + 1
                if n <= 0 or first + n > CHILD_MAX:
                    raise IndexFileError(self.path, off, "child range is not 7-bit ASCII")
                kids = unpack_from(_CHILD_FORMATS[n], buf, off + 2)
                off += 2 + 4 * n
                if n == 1:
                    push((kids[0], key + _CHR[first]))
                else:
                    extend([(kids[k], key + _CHR[first + k])
                            for k in reversed(list(compress(range(n), kids)))])
            if word & NODE_VALUES:
                (count,) = u32(buf, off)
                off += 4
                for _ in range(count):
                    (prio,) = u32(buf, off)
                    end = find(b"\0", off + 4)
                    if end < 0:
                        raise IndexFileError(self.path, off, "value runs past the end of the file")
                    yield (key, prio, buf[off + 4 : end].decode("ascii"))
                    off = end + 1

    def check(self) -> int:
        """Walk the whole trie with every bound checked; return how many values it holds.

        The walk reads what a lookup or a decode would read (node words, prefixes, child
        tables, value lists) and builds no key, so it costs a few milliseconds per megabyte:
        after it, no lookup on this index can meet damage. Raises IndexFileError at the
        first fault, naming its offset.
        """
        if not self.root & NODE_OFFSET:
            return 0
        buf = self._buf
        size = self._size
        find = buf.find
        path = self.path
        u32 = _U32.unpack_from
        values = 0
        visited = 0
        stack = [self.root]
        pop = stack.pop
        extend = stack.extend
        while stack:
            word = pop()
            off = word & NODE_OFFSET
            visited += 1
            if visited > size:  # a valid trie has fewer nodes than bytes
                raise IndexFileError(path, off, "trie loops back on itself")
            if not word & NODE_FLAGS:
                continue  # nothing is read for an empty node (see `node`)
            if off < HEADER_SIZE or off >= size:
                raise IndexFileError(path, off, "node offset outside the file")
            if word & NODE_PREFIX:
                end = find(b"\0", off)
                if end < 0:
                    raise IndexFileError(path, off, "node prefix runs past the end of the file")
                if not buf[off:end].isascii():
                    raise IndexFileError(path, off, "node prefix is not 7-bit ASCII")
                off = end + 1
            if word & NODE_CHILDS:
                if off + 2 > size:
                    raise IndexFileError(path, off, "child table runs past the end of the file")
                first = buf[off]
                last = buf[off + 1]
                if last >= CHILD_MAX or first > last:
                    raise IndexFileError(
                        path, off, f"child range {first:#x}..{last:#x} is not 7-bit ASCII")
                n = last - first + 1
                if off + 2 + 4 * n > size:
                    raise IndexFileError(path, off, "child table runs past the end of the file")
                extend([w for w in _CHILD_UNPACK[n](buf, off + 2) if w])
                off += 2 + 4 * n
            if word & NODE_VALUES:
                if off + 4 > size:
                    raise IndexFileError(path, off, "value count runs past the end of the file")
                (count,) = u32(buf, off)
                off += 4
                # Every value takes at least 5 bytes: a damaged count ends at the file's end.
                for _ in range(count):
                    end = find(b"\0", off + 4) if off + 4 <= size else -1
                    if end < 0:
                        raise IndexFileError(path, off, "value runs past the end of the file")
                    if not buf[off + 4 : end].isascii():
                        raise IndexFileError(path, off + 4, "value is not 7-bit ASCII")
                    off = end + 1
                values += count
        return values

    def _walk_checked(self) -> None:
        """Visit every node with full checks (raises IndexFileError at the first fault)."""
        if not self.root & NODE_OFFSET:
            return
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            node = self.node(stack.pop())
            if node.offset in seen:
                raise IndexFileError(self.path, node.offset, "node is reached twice")
            seen.add(node.offset)
            stack.extend(w for w in node.children if w)


def scan_subtree(entries: Iterable[tuple[str, int, str]], subkey: str,
                 found: list[tuple[int, int, str]]) -> None:
    """Append to `found`, as `BinIndex._wild_all` does, every entry of a subtree (given in
    any order of keys, a key's values in file order) whose pattern matches `subkey`."""
    for key, prio, value in sorted(entries, key=_post_order):
        if match(key, subkey):
            found.append((prio, -len(found), value))


_CHILD_FORMATS = {n: f">{n}I" for n in range(1, CHILD_MAX + 1)}
_CHILD_UNPACK = {n: struct.Struct(f">{n}I").unpack_from for n in range(1, CHILD_MAX + 1)}
_AFTER_ALL = "\uffff"


def _post_order(entry: tuple[str, int, str]) -> str:
    return entry[0] + _AFTER_ALL
_CHR = tuple(chr(i) for i in range(CHILD_MAX))

