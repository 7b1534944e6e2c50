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
from collections import defaultdict
from collections.abc import Callable, Iterable

from kmodd.core.binindex import BinIndex
from kmodd.core.glob import compile_pattern

#: Buckets with more patterns than this get the tail and segment sub-indexes.
LINEAR_BUCKET_MAX = 4
#: Length of the query head used to find candidate bucket prefixes.
HEAD = 3
#: Shortest literal segment worth indexing.
MIN_SEGMENT = 3

_WILD_RANK = {"*": 0, "?": 1, "[": 2}
_AFTER_ALL = "\uffff"

# An entry: (priority, value, key, index of the value on its key, tail, mids, matcher)
# `matcher` is None for `*`-only patterns (matched by tail + mids), else a compiled matcher
# applied to the query text after the bucket's literal prefix.
Entry = tuple[int, str, str, int, str, list[str], "_Lazy | None"]


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
            m = wildcard(key)
            if m is None:
                if key in exact:
                    exact[key].append((prio, value, vidx))
                else:
                    exact[key] = [(prio, value, vidx)]
                continue
            cut = m.start()
            rest = key[cut:]
            if "?" in rest or "[" in rest or "\\" in rest:
                grouped[key[:cut]].append((prio, value, key, vidx, "", [], _Lazy(rest)))
            else:
                parts = rest.split("*")
                grouped[key[:cut]].append((prio, value, key, vidx, parts[-1], parts[1:-1], None))
        self.size = size
        self._exact = exact
        self._buckets: dict[str, _Bucket | list[Entry]] = {}
        heads: dict[str, set[int]] = defaultdict(set)
        short: list[str] = []
        for prefix, entries in grouped.items():
            self._buckets[prefix] = (
                entries if len(entries) <= LINEAR_BUCKET_MAX
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
        found: list[tuple[int, str, str, int, int]] = []  # prio, value, key, vidx, start
        buckets = self._buckets
        n = len(query)
        for length in self._heads.get(query[:HEAD], ()):
            if length > n:
                break
            b = buckets.get(query[:length])
            if b is not None:
                if type(b) is list:
                    _scan_plain(b, length, query, n, found)
                else:
                    _scan(b, query, n, found)  # type: ignore[arg-type]
        for prefix in self._short:
            if query.startswith(prefix):
                b = buckets[prefix]
                if type(b) is list:
                    _scan_plain(b, len(prefix), query, n, found)
                else:
                    _scan(b, query, n, found)  # type: ignore[arg-type]
        hits = self._exact.get(query)
        if not found:
            if not hits:
                return []
            if len(hits) == 1:
                return [(hits[0][0], hits[0][1])]
            return [(p, v) for p, v, _ in sorted(hits, key=_exact_order)]
        if hits:
            for p, v, vidx in hits:
                found.append((p, v, query, vidx, -1))
        return _order(found)


def _exact_order(hit: tuple[int, str, int]) -> tuple[int, int]:
    """Values of one key: by priority; among equals, the later in the file first."""
    return (hit[0], -hit[2])


_WILDCARD = re.compile(r"[*?\[]")


class _Lazy:
    """A pattern with `?`, `[` or `\\`, compiled the first time a query reaches it."""

    __slots__ = ("_match", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._match: Callable[[str], bool] | None = None

    def __call__(self, text: str) -> bool:
        if self._match is None:
            self._match = compile_pattern(self.pattern)
        return self._match(text)


def _build_bucket(start: int, entries: list[Entry]) -> _Bucket:
    b = _Bucket(start)
    b.size = len(entries)
    by_tail: dict[int, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    by_seg: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        if e[6] is not None:
            b.plain.append(e)
        elif e[4]:
            by_tail[len(e[4])][e[4]].append(e)
        else:
            seg = max(e[5], key=len, default="")
            if len(seg) < MIN_SEGMENT:
                b.plain.append(e)
            else:
                by_seg[seg[0]][seg].append(e)
    b.tails = sorted((length, dict(d)) for length, d in by_tail.items())
    b.tokens = [
        (c, tuple(sorted({len(k) for k in segs})), dict(segs)) for c, segs in by_seg.items()
    ]
    return b


def _star_match(query: str, start: int, n: int, tail: str, mids: list[str]) -> bool:
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


def _scan_plain(
    entries: list[Entry], start: int, query: str, n: int,
    found: list[tuple[int, str, str, int, int]],
) -> None:
    for e in entries:
        matcher = e[6]
        if matcher is None:
            tail = e[4]
            if (not tail or query.endswith(tail)) and _star_match(query, start, n, tail, e[5]):
                found.append((e[0], e[1], e[2], e[3], start))
        elif matcher(query[start:]):
            found.append((e[0], e[1], e[2], e[3], start))


def _scan(b: _Bucket, query: str, n: int, found: list[tuple[int, str, str, int, int]]) -> None:
    start = b.start
    if b.plain:
        _scan_plain(b.plain, start, query, n, found)
    for length, table in b.tails:
        if length > n - start:
            break
        hits = table.get(query[n - length :])
        if hits:
            for e in hits:
                if _star_match(query, start, n, e[4], e[5]):
                    found.append((e[0], e[1], e[2], e[3], start))
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
                        if _star_match(query, start, n, "", e[5]):
                            found.append((e[0], e[1], e[2], e[3], start))
            i = query.find(c, i + 1)


def _visit_key(hit: tuple[int, str, str, int, int]) -> tuple[int, int, str, int]:
    """The order in which libkmod's trie walk meets a hit (see the module docstring)."""
    _prio, _value, key, vidx, start = hit
    if start < 0:  # the exact match, met last
        return (1 << 30, 0, "", vidx)
    return (start, _WILD_RANK[key[start]], key[start + 1 :] + _AFTER_ALL, vidx)


def _order(found: list[tuple[int, str, str, int, int]]) -> list[tuple[int, str]]:
    """libkmod's add_value order: by priority; among equals, the later-met first."""
    if len(found) > 1 and len({h[0] for h in found}) != len(found):
        found.sort(key=_visit_key, reverse=True)
        found.sort(key=lambda h: h[0])
    else:
        found.sort(key=lambda h: h[0])
    return [(h[0], h[1]) for h in found]
