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

from kmodd.core.binindex import BinIndex
from kmodd.core.glob import compile_pattern

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

# An entry: (priority, value, key, index of the value on its key, tail, mids, matcher, probe)
# `matcher` is None for `*`-only patterns (matched by tail + mids), else a compiled matcher
# applied to the query text after the bucket's literal prefix. `probe` is a literal the query
# must contain for the pattern to match ("" when none is worth testing).
Entry = tuple[int, str, str, int, str, list[str], "Callable[[str], bool] | None", str]


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
                grouped[key[:cut]].append(
                    (prio, value, key, vidx, "", [], compile_pattern(rest), _literal_probe(rest)))
            else:
                parts = rest.split("*")
                grouped[key[:cut]].append(
                    (prio, value, key, vidx, parts[-1], parts[1:-1], None, ""))
        self.size = size
        self._exact = exact
        self._buckets: dict[str, _Bucket | list[Entry]] = {}
        heads: dict[str, set[int]] = defaultdict(set)
        short: list[str] = []
        for prefix, entries in grouped.items():
            self._buckets[prefix] = (
                entries if len(entries) <= TINY_BUCKET_MAX
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

    def _find(self, query: str) -> list[tuple[int, str, str, int, int]]:
        """Every hit as (priority, value, key, index on its key, literal prefix length)."""
        found: list[tuple[int, str, str, int, int]] = []
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
        if hits:
            for p, v, vidx in hits:
                found.append((p, v, query, vidx, -1))
        return found


_WILDCARD = re.compile(r"[*?\[]")




def _build_bucket(start: int, entries: list[Entry]) -> _Bucket:
    """Pick, for every pattern, its most selective literal segment, and index by it."""
    b = _Bucket(start)
    b.size = len(entries)
    share: Counter[str] = Counter()
    for e in entries:
        if e[6] is None:
            share.update(e[5])
            if e[4]:
                share[e[4]] += 1
    chosen: list[Entry] = []
    for e in entries:
        if e[6] is not None:
            chosen.append(e)
            continue
        best = ""
        best_rank = (1 << 30, 0)
        for seg in (*e[5], e[4]):
            if len(seg) >= MIN_SEGMENT:
                rank = (share[seg], -len(seg))
                if rank < best_rank:
                    best, best_rank = seg, rank
        chosen.append((*e[:7], best))
    first_chars = {e[7][0] for e in chosen if e[6] is None and e[7] and e[7] != e[4]}
    if len(entries) <= LINEAR_BUCKET_MAX or len(first_chars) > TOKEN_FIRST_CHARS_MAX:
        b.plain = chosen
        return b
    by_tail: dict[int, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    by_seg: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for e in chosen:
        seg = e[7] if e[6] is None else ""
        if not seg:
            b.plain.append(e)
        elif seg == e[4]:
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
            probe = e[7]
            if probe and probe not in query:
                continue
            tail = e[4]
            if tail and not query.endswith(tail):
                continue
            mids = e[5]
            end = n - len(tail)
            if end < start:
                continue
            if mids:
                pos = start
                for m in mids:
                    pos = query.find(m, pos, end)
                    if pos < 0:
                        break
                    pos += len(m)
                else:
                    found.append((e[0], e[1], e[2], e[3], start))
            else:
                found.append((e[0], e[1], e[2], e[3], start))
        elif (not e[7] or e[7] in query) and matcher(query[start:]):
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
                        tail = e[4]
                        if ((not tail or query.endswith(tail))
                                and _star_match(query, start, n, tail, e[5])):
                            found.append((e[0], e[1], e[2], e[3], start))
            i = query.find(c, i + 1)


def _visit_key(hit: tuple[int, str, str, int, int]) -> tuple[int, int, str, int]:
    """The order in which libkmod's trie walk meets a hit (see the module docstring)."""
    _prio, _value, key, vidx, start = hit
    if start < 0:  # the exact match, met last
        return (1 << 30, 0, "", vidx)
    return (start, _WILD_RANK[key[start]], key[start + 1 :] + _AFTER_ALL, vidx)


def _order(found: list[tuple[int, str, str, int, int]]) -> list[tuple[int, str, str, int, int]]:
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


def _priority(hit: tuple[int, str, str, int, int]) -> int:
    return hit[0]
