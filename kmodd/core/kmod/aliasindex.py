"""A memory-resident alias index that answers libkmod's wildcard lookup fast and exactly.

libkmod walks the `modules.alias.bin` trie along the query and fnmatches every pattern whose
first wildcard sits on that path; for `of:N*T*C...` keys that is every device-tree alias, on
every lookup. This index gives the same answer (same modules, same order, same duplicates)
without that scan:

* keys without wildcards sit in a dict (`exact`);
* keys with wildcards are grouped in buckets by their literal prefix (the text before the
  first `*`, `?` or `[`), found for a query with at most a handful of dict probes;
* inside a large bucket, patterns are found through a necessary condition that a dict can
  answer: the literal tail the query must end with, or a literal segment `c...d` (whose last
  character `d` occurs nowhere else in it) that the query must contain: every occurrence of
  `c` in the query names the one candidate segment that can start there;
* each candidate is then matched exactly (`*`-only patterns by segment search, anything else
  by `glob.compile_pattern`).

A query that itself contains `*`, `?` or `[` follows kmod's walk on the raw index instead,
because kmod's answer then depends on the shape of the trie.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from kmodd.core.kmod.binindex import BinIndex, scan_subtree
from kmodd.core.kmod.glob import compile_pattern

#: Buckets up to this size are scanned, each pattern first tested by its most selective
#: literal segment (a C-speed substring test); bigger ones get tail and segment sub-indexes.
LINEAR_BUCKET_MAX = 32
#: A big bucket whose segments start with more distinct characters than this is scanned
#: too: looking up every occurrence of each of them would cost more than the scan.
TOKEN_FIRST_CHARS_MAX = 4
#: Buckets up to this size are kept as a plain list (no per-pattern probe segment).
TINY_BUCKET_MAX = 4
#: Length of the query head used to find candidate bucket prefixes.
HEAD = 3
#: Shortest literal segment worth indexing.
MIN_SEGMENT = 3

_WILD_RANK = {"*": 0, "?": 1, "[": 2}
_AFTER_ALL = "\uffff"

# A shape: the text of a pattern after its literal prefix, parsed once and shared by every
# pattern that has it (most PCI and USB aliases share theirs, like `*sd*bc*sc*i*`):
# (rest, tail, mids, matcher, probe). `matcher` is None for `*`-only rests (matched by tail
# and mids), else a compiled matcher applied to the query text after the literal prefix;
# `probe` is a literal the query must contain ("" when none is worth testing).
Shape = tuple[str, str, tuple[str, ...], "Callable[[str], bool] | None", str]
# An entry: (priority, value, index of the value on its key, shape, probe). Inside a large
# bucket the probe is the pattern's most selective literal, else the shape's.
Entry = tuple[int, str, int, Shape, str]
# A hit: (priority, value, rest of the key after the literal prefix, index on its key,
# literal prefix length); an exact match has the whole key as rest and -1 as length.
Hit = tuple[int, str, str, int, int]


class _Bucket:
    __slots__ = ("plain", "size", "start", "tails", "tokens")

    def __init__(self, start: int) -> None:
        self.start = start  # length of the literal prefix
        self.plain: list[Entry] = []
        # (tail length, {tail: entries}), shortest first
        self.tails: list[tuple[int, dict[str, list[Entry]]]] = []
        # (first character, segment lengths, {segment: entries})
        self.tokens: list[tuple[str, tuple[int, ...], dict[str, list[Entry]]]] = []
        self.size = 0


class AliasIndex:
    """In-memory equivalent of `BinIndex.search_wild` for one index file."""

    __slots__ = ("_buckets", "_exact", "_heads", "_raw", "_short", "size")

    def __init__(self, items: Iterable[tuple[str, int, str]], raw: BinIndex | None) -> None:
        self._raw = raw
        exact: dict[str, list[tuple[int, str, int]]] = {}
        grouped: dict[str, list[Entry]] = defaultdict(list)
        shapes: dict[str, Shape] = {}
        # One object per module name, however many aliases name it.
        names: dict[str, str] = {}
        wildcard = _WILDCARD.search
        last_key = None
        vidx = 0
        size = 0
        for key, prio, value in items:
            size += 1
            if key == last_key:
                vidx += 1
            else:
                vidx = 0
                last_key = key
            value = names.setdefault(value, value)
            m = wildcard(key)
            if m is None:
                if key in exact:
                    exact[key].append((prio, value, vidx))
                else:
                    exact[key] = [(prio, value, vidx)]
                continue
            cut = m.start()
            rest = key[cut:]
            shape = shapes.get(rest)
            if shape is None:
                shape = shapes[rest] = _shape(rest)
            grouped[key[:cut]].append((prio, value, vidx, shape, shape[4]))
        self.size = size
        self._exact = exact
        # A bucket of one pattern is the entry itself, of a few a list, else a _Bucket.
        self._buckets: dict[str, _Bucket | list[Entry] | Entry] = {}
        heads: dict[str, set[int]] = defaultdict(set)
        short: list[str] = []
        for prefix, entries in grouped.items():
            self._buckets[prefix] = (
                entries[0] if len(entries) == 1
                else entries if len(entries) <= TINY_BUCKET_MAX
                else _build_bucket(len(prefix), entries)
            )
            if len(prefix) < HEAD:
                short.append(prefix)
            else:
                heads[prefix[:HEAD]].add(len(prefix))
        self._heads = {h: tuple(sorted(ls)) for h, ls in heads.items()}
        self._short = tuple(sorted(short))

    def search_wild(self, query: str) -> list[tuple[int, str]]:
        """Every (priority, module) whose pattern matches `query`, in libkmod's order."""
        if "*" in query or "?" in query or "[" in query:
            if self._raw is None:
                return []
            return self._raw.search_wild(query)
        found = self._find(query)
        if len(found) > 1:
            found = _order(found)
        return [(h[0], h[1]) for h in found]

    def values(self, query: str) -> list[str]:
        """The modules of `search_wild(query)`, nothing else (the resolver's hot path)."""
        if "*" in query or "?" in query or "[" in query:
            if self._raw is None:
                return []
            return [v for _, v in self._raw.search_wild(query)]
        found = self._find(query)
        if len(found) > 1:
            found = _order(found)
        return [h[1] for h in found]

    def matches_in_key_order(self, query: str) -> list[tuple[int, str]]:
        """(priority, value) of every pattern matching `query` (which has no wildcard), in
        the order a trie walk meets the patterns when it visits children before their node:
        by key with a sentinel above every character appended, values in file order."""
        found = self._find(query)
        if len(found) > 1:
            found.sort(key=lambda h: (query[: h[4]] + h[2] if h[4] >= 0 else h[2])
                       + _AFTER_ALL)
        return [(h[0], h[1]) for h in found]

    def _find(self, query: str) -> list[Hit]:
        """Every hit of `query`, unordered."""
        found: list[Hit] = []
        buckets = self._buckets
        n = len(query)
        for length in self._heads.get(query[:HEAD], ()):
            if length > n:
                break
            b = buckets.get(query[:length])
            if b is not None:
                _scan_any(b, length, query, n, found)
        for prefix in self._short:
            if query.startswith(prefix):
                _scan_any(buckets[prefix], len(prefix), query, n, found)
        hits = self._exact.get(query)
        if hits:
            for p, v, vidx in hits:
                found.append((p, v, query, vidx, -1))
        return found


class MappedAliasIndex:
    """A `.bin` alias index searched as mapped, each wildcard subtree decoded once.

    libkmod's walk for a modalias meets the same few subtrees again and again (every
    `acpi:` key reaches all the `acpi*:` patterns, every PCI key the `pci:v*` ones), and
    fnmatching them from the file costs more than the rest of a boot's lookups. Here a
    subtree is decoded and scanned on its first visit, as libkmod does, and kept; met again,
    it gets an `AliasIndex` of its own, which finds the matching patterns directly. The
    walk and the result order stay libkmod's. What is never met is never decoded, so this
    suits the boot's first lookups, before (or instead of) a full decode.
    """

    __slots__ = ("_subtrees", "raw")

    def __init__(self, raw: BinIndex) -> None:
        self.raw = raw
        # a subtree met once: its entries as decoded; met again: their AliasIndex
        self._subtrees: dict[tuple[int, int, str], list[tuple[str, int, str]] | AliasIndex] = {}

    def search_wild(self, query: str) -> list[tuple[int, str]]:
        """The same answer as `BinIndex.search_wild(query)`."""
        if "*" in query or "?" in query or "[" in query:
            return self.raw.search_wild(query)
        found: list[tuple[int, int, str]] = []
        self.raw.wild_descend(query, self._subtree, found)
        found.sort()
        return [(prio, value) for prio, _, value in found]

    def _subtree(self, word: int, skip: int, pattern: str, subkey: str,
                 found: list[tuple[int, int, str]]) -> None:
        where = (word, skip, pattern)
        known = self._subtrees.get(where)
        if known is None:
            # First visit: decode and scan, as libkmod does, and keep what was decoded.
            entries = self._subtrees[where] = list(self.raw.subtree_items(word, pattern, skip))
            scan_subtree(entries, subkey, found)
            return
        if isinstance(known, list):
            # Met again: worth an index of its own.
            known = self._subtrees[where] = AliasIndex(known, None)
        for prio, value in known.matches_in_key_order(subkey):
            found.append((prio, -len(found), value))


def _scan_any(b: _Bucket | list[Entry] | Entry, start: int, query: str, n: int,
              found: list[Hit]) -> None:
    kind = type(b)
    if kind is tuple:
        _scan_plain((b,), start, query, n, found)  # type: ignore[arg-type]
    elif kind is list:
        _scan_plain(b, start, query, n, found)  # type: ignore[arg-type]
    else:
        _scan(b, query, n, found)  # type: ignore[arg-type]


def _shape(rest: str) -> Shape:
    if "?" in rest or "[" in rest or "\\" in rest:
        return (rest, "", (), compile_pattern(rest), _literal_probe(rest))
    parts = rest.split("*")
    return (rest, parts[-1], tuple(parts[1:-1]), None, "")


_WILDCARD = re.compile(r"[*?\[]")




def _build_bucket(start: int, entries: list[Entry]) -> _Bucket:
    """Pick, for every pattern, its most selective literal segment, and index by it."""
    b = _Bucket(start)
    b.size = len(entries)
    share: Counter[str] = Counter()
    for e in entries:
        shape = e[3]
        if shape[3] is None:
            share.update(shape[2])
            if shape[1]:
                share[shape[1]] += 1
    chosen: list[Entry] = []
    for e in entries:
        shape = e[3]
        if shape[3] is not None:
            chosen.append(e)
            continue
        best = ""
        best_rank = (1 << 30, 0)
        for seg in (*shape[2], shape[1]):
            if len(seg) >= MIN_SEGMENT:
                rank = (share[seg], -len(seg))
                if rank < best_rank:
                    best, best_rank = seg, rank
        chosen.append((e[0], e[1], e[2], shape, best))
    first_chars = {e[4][0] for e in chosen
                   if e[3][3] is None and e[4] and e[4] != e[3][1]}
    if len(entries) <= LINEAR_BUCKET_MAX or len(first_chars) > TOKEN_FIRST_CHARS_MAX:
        b.plain = chosen
        return b
    by_tail: dict[int, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    by_seg: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for e in chosen:
        seg = e[4] if e[3][3] is None else ""
        if not seg:
            b.plain.append(e)
        elif seg == e[3][1]:
            by_tail[len(seg)][seg].append(e)
        else:
            by_seg[seg[0]][seg].append(e)
    b.tails = sorted((length, dict(d)) for length, d in by_tail.items())
    b.tokens = [
        (c, tuple(sorted({len(k) for k in segs})), dict(segs)) for c, segs in by_seg.items()
    ]
    return b


_PROBE_SPLIT = re.compile(r"[*?\[\]\\]+")


def _literal_probe(rest: str) -> str:
    """A literal run the query must contain for a `?`/`[` pattern to match ("" if none).

    Only runs outside brackets count, and only when the pattern has no backslash (an escape
    would change what the run means).
    """
    if "\\" in rest or "[" in rest:
        return ""
    runs = [r for r in _PROBE_SPLIT.split(rest) if len(r) >= MIN_SEGMENT]
    return max(runs, key=len) if runs else ""


def _star_match(query: str, start: int, n: int, tail: str, mids: tuple[str, ...]) -> bool:
    end = n - len(tail)
    if end < start:
        return False
    pos = start
    for m in mids:
        pos = query.find(m, pos, end)
        if pos < 0:
            return False
        pos += len(m)
    return True


def _scan_plain(entries: list[Entry] | tuple[Entry, ...], start: int, query: str, n: int,
                found: list[Hit]) -> None:
    for e in entries:
        shape = e[3]
        matcher = shape[3]
        if matcher is None:
            probe = e[4]
            if probe and probe not in query:
                continue
            tail = shape[1]
            if tail and not query.endswith(tail):
                continue
            end = n - len(tail)
            if end < start:
                continue
            mids = shape[2]
            if mids:
                pos = start
                for m in mids:
                    pos = query.find(m, pos, end)
                    if pos < 0:
                        break
                    pos += len(m)
                else:
                    found.append((e[0], e[1], shape[0], e[2], start))
            else:
                found.append((e[0], e[1], shape[0], e[2], start))
        elif (not e[4] or e[4] in query) and matcher(query[start:]):
            found.append((e[0], e[1], shape[0], e[2], start))


def _scan(b: _Bucket, query: str, n: int, found: list[Hit]) -> None:
    start = b.start
    if b.plain:
        _scan_plain(b.plain, start, query, n, found)
    for length, table in b.tails:
        if length > n - start:
            break
        hits = table.get(query[n - length :])
        if hits:
            for e in hits:
                shape = e[3]
                if _star_match(query, start, n, shape[1], shape[2]):
                    found.append((e[0], e[1], shape[0], e[2], start))
    for c, lengths, segs in b.tokens:
        i = query.find(c, start)
        seen: set[str] | None = None
        while i >= 0:
            for length in lengths:
                seg = query[i : i + length]
                hits = segs.get(seg)
                if hits is not None:
                    if seen is None:
                        seen = set()
                    elif seg in seen:
                        continue
                    seen.add(seg)
                    for e in hits:
                        shape = e[3]
                        tail = shape[1]
                        if ((not tail or query.endswith(tail))
                                and _star_match(query, start, n, tail, shape[2])):
                            found.append((e[0], e[1], shape[0], e[2], start))
            i = query.find(c, i + 1)


def _visit_key(hit: Hit) -> tuple[int, int, str, int]:
    """The order in which libkmod's trie walk meets a hit (see the module docstring)."""
    _prio, _value, rest, vidx, start = hit
    if start < 0:  # the exact match, met last
        return (1 << 30, 0, "", vidx)
    return (start, _WILD_RANK[rest[0]], rest[1:] + _AFTER_ALL, vidx)


def _order(found: list[Hit]) -> list[Hit]:
    """libkmod's add_value order: by priority; among equals, the later-met first."""
    if len(found) == 2:
        a, b = found
        if a[0] != b[0]:
            return found if a[0] < b[0] else [b, a]
    found.sort(key=_priority)
    for i in range(len(found) - 1):
        if found[i][0] == found[i + 1][0]:
            found.sort(key=_visit_key, reverse=True)
            found.sort(key=_priority)
            break
    return found


def _priority(hit: Hit) -> int:
    return hit[0]
