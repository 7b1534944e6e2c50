"""Shell patterns exactly as kmod matches them: glibc's `fnmatch(pattern, string, 0)`.

kmod matches config aliases, install/remove/softdep keys and the wildcard keys of
`modules.alias.bin` with the C library's fnmatch, no flags, in the C locale (modprobe never
calls setlocale). That means: `*` and `?` match any byte, `/` and a leading `.` included;
a backslash escapes the next byte and a trailing backslash never matches; `[...]` is a bracket
expression with `!`/`^` negation, ranges by byte value, `[:class:]` names, and the
single-character `[.x.]`/`[=x=]` forms of the C locale; an unterminated `[` is a plain `[`,
while some ill-formed brackets make the whole pattern fail. Python's `fnmatch` module differs
on several of these points, so it is not used.

Strings are Latin-1 decoded bytes throughout kmodd, one character per byte.

`compile_pattern` returns the fastest exact matcher for a pattern: plain comparison, a
`*`-segment matcher, a regular expression for `?`, or the general byte-by-byte matcher
(`fnmatch`) for patterns with brackets or backslashes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

WILDCARDS = frozenset("*?[")
_CHAR_CLASS_MAX_LENGTH = 256

#: The C locale's character classes (glibc, single-byte).
_CLASSES: dict[str, Callable[[int], bool]] = {
    "alnum": lambda b: 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A,
    "alpha": lambda b: 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A,
    "blank": lambda b: b in (0x20, 0x09),
    "cntrl": lambda b: b < 0x20 or b == 0x7F,
    "digit": lambda b: 0x30 <= b <= 0x39,
    "graph": lambda b: 0x21 <= b <= 0x7E,
    "lower": lambda b: 0x61 <= b <= 0x7A,
    "print": lambda b: 0x20 <= b <= 0x7E,
    "punct": lambda b: 0x21 <= b <= 0x7E and not (
        0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A
    ),
    "space": lambda b: b in (0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D),
    "upper": lambda b: 0x41 <= b <= 0x5A,
    "xdigit": lambda b: 0x30 <= b <= 0x39 or 0x41 <= b <= 0x46 or 0x61 <= b <= 0x66,
}

_NOMATCH = -1  # "the whole pattern fails", as glibc's early `return FNM_NOMATCH`
_LITERAL = 2  # an unterminated bracket: the `[` stands for itself


def has_wildcard(pattern: str) -> bool:
    """True if kmod's index walk would treat the pattern as wildcard (`*`, `?` or `[`)."""
    return "*" in pattern or "?" in pattern or "[" in pattern


def fnmatch(pattern: str, string: str) -> bool:
    """glibc `fnmatch(pattern, string, 0) == 0` in the C locale."""
    p = pattern.split("\0", 1)[0]
    s = string.split("\0", 1)[0]
    return _match(p, 0, s, 0) == 1


def _match(p: str, pi: int, s: str, si: int) -> int:
    """1 on match, 0 on no match, _NOMATCH when the pattern is ill-formed where it was read."""
    plen = len(p)
    slen = len(s)
    while pi < plen:
        c = p[pi]
        pi += 1
        if c == "?":
            if si == slen:
                return 0
        elif c == "\\":
            if pi == plen:
                return 0  # a trailing backslash loses
            c = p[pi]
            pi += 1
            if si == slen or s[si] != c:
                return 0
        elif c == "*":
            # Collapse a run of `*` and `?`; every `?` must eat one character.
            while pi < plen and p[pi] in "*?":
                if p[pi] == "?":
                    if si == slen:
                        return 0
                    si += 1
                pi += 1
            if pi == plen:
                return 1
            for start in range(si, slen):
                r = _match(p, pi, s, start)
                if r == 1:
                    return 1
            return 0
        elif c == "[":
            r, pi = _bracket(p, pi, s, si)
            if r == _LITERAL:
                if si == slen or s[si] != "[":
                    return 0
            elif r != 1:
                return 0
        else:
            if si == slen or s[si] != c:
                return 0
        si += 1
    return 1 if si == slen else 0


def _terminated(p: str, pi: int) -> bool:
    """glibc (2.36) reads `[` as a plain character unless a closing `]` follows."""
    if pi < len(p) and p[pi] in "!^":
        pi += 1
    if pi < len(p) and p[pi] == "]":
        pi += 1
    return p.find("]", pi) >= 0


def _collating_symbol(p: str, pi: int) -> tuple[str | None, int]:
    """The `[.x.]` whose `.` is at `pi`: its character, or None when the pattern cannot
    match (unterminated, or not exactly one character); and where the bracket goes on."""
    start = pi
    while True:
        pi += 1
        c = p[pi] if pi < len(p) else "\0"
        if c == "." and (p[pi + 1] if pi + 1 < len(p) else "\0") == "]":
            return (p[start + 1] if pi - start == 2 else None), pi + 2
        if c == "\0":
            return None, pi


def _bracket(p: str, pi: int, s: str, si: int) -> tuple[int, int]:
    """Match one bracket expression starting after its `[`.

    Returns (1, next pattern index) on match, (0, _) on no match, (_NOMATCH, _) when glibc
    gives up on the whole pattern, or (_LITERAL, index after the `[`) when the bracket is
    unterminated and the `[` stands for itself (_LITERAL).
    """
    p_init = pi
    plen = len(p)
    if si == len(s):
        return 0, pi
    if not _terminated(p, pi):
        return _LITERAL, p_init
    fn = ord(s[si])

    def at(i: int) -> str:
        return p[i] if i < plen else "\0"

    negate = at(pi) in "!^"
    if negate:
        pi += 1
    c = at(pi)
    pi += 1
    matched = False
    while True:
        cold: int
        if c == "\\":
            if at(pi) == "\0":
                return _NOMATCH, pi
            c = at(pi)
            pi += 1
            # fall into the plain-character case below with c escaped
            is_range = at(pi) == "-" and at(pi + 1) not in ("\0", "]")
            if not is_range and ord(c) == fn:
                matched = True
                break
            cold = ord(c)
            c = at(pi)
            pi += 1
        elif c == "[" and at(pi) == ":":
            startp = pi
            name: list[str] = []
            valid_name = True
            while True:
                if len(name) == _CHAR_CLASS_MAX_LENGTH:
                    return _NOMATCH, pi
                pi += 1
                c = at(pi)
                if c == ":" and at(pi + 1) == "]":
                    pi += 2
                    break
                if c < "a" or c >= "z":
                    valid_name = False
                    break
                name.append(c)
            if not valid_name:
                # Not a class name: read the `[` as a plain character.
                pi = startp
                c = "["
                is_range = at(pi) == "-" and at(pi + 1) not in ("\0", "]")
                if not is_range and fn == ord("["):
                    matched = True
                    break
                cold = ord("[")
                c = at(pi)
                pi += 1
            else:
                test = _CLASSES.get("".join(name))
                if test is None:
                    return _NOMATCH, pi
                if test(fn):
                    matched = True
                    break
                c = at(pi)
                pi += 1
                if c == "]":
                    break
                continue
        elif c == "[" and at(pi) == "=":
            startp = pi
            pi += 1
            c = at(pi)
            if c == "\0":
                pi = startp
                c = "["
                is_range = at(pi) == "-" and at(pi + 1) not in ("\0", "]")
                if not is_range and fn == ord("["):
                    matched = True
                    break
                cold = ord("[")
                c = at(pi)
                pi += 1
            else:
                equiv = c
                pi += 1
                c = at(pi)
                if c != "=" or at(pi + 1) != "]":
                    pi = startp
                    c = "["
                    is_range = at(pi) == "-" and at(pi + 1) not in ("\0", "]")
                    if not is_range and fn == ord("["):
                        matched = True
                        break
                    cold = ord("[")
                    c = at(pi)
                    pi += 1
                else:
                    pi += 2
                    if fn == ord(equiv):
                        matched = True
                        break
                    c = at(pi)
                    pi += 1
                    if c == "]":
                        break
                    continue
        elif c == "\0":
            return _LITERAL, p_init
        elif c == "[" and at(pi) == ".":
            symbol, pi = _collating_symbol(p, pi)
            if symbol is None:
                return _NOMATCH, pi
            is_range = at(pi) == "-" and at(pi + 1) != "\0"
            sym = symbol
            if not is_range and fn == ord(sym):
                matched = True
                break
            cold = ord(sym)
            c = at(pi)
            pi += 1
        else:
            is_range = at(pi) == "-" and at(pi + 1) not in ("\0", "]")
            if not is_range and ord(c) == fn:
                matched = True
                break
            cold = ord(c)
            c = at(pi)
            pi += 1

        if c == "-" and at(pi) != "]":
            cend_c = at(pi)
            pi += 1
            if cend_c == "[" and at(pi) == ".":
                symbol, pi = _collating_symbol(p, pi)
                if symbol is None:
                    return _NOMATCH, pi
                cend = ord(symbol)
            else:
                if cend_c == "\\":
                    cend_c = at(pi)
                    pi += 1
                if cend_c == "\0":
                    return _NOMATCH, pi
                cend = ord(cend_c)
            if cold <= fn and fn <= cend:
                matched = True
                break
            c = at(pi)
            pi += 1
        if c == "]":
            break

    if not matched:
        return (1 if negate else 0), pi
    # Skip the rest of a bracket that already matched.
    while True:
        c = at(pi)
        pi += 1
        if c == "]":
            break
        if c == "\0":
            return _NOMATCH, pi
        if c == "\\":
            if at(pi) == "\0":
                return _NOMATCH, pi
            pi += 1
        elif c == "[" and at(pi) == ":":
            startp = pi
            n = 0
            while True:
                pi += 1
                c = at(pi)
                n += 1
                if n == _CHAR_CLASS_MAX_LENGTH:
                    return _NOMATCH, pi
                if at(pi) == ":" and at(pi + 1) == "]":
                    break
                if c < "a" or c >= "z":
                    pi = startp - 2
                    break
            pi += 2
        elif c == "[" and at(pi) == "=":
            pi += 1
            if at(pi) == "\0":
                return _NOMATCH, pi
            pi += 1
            if at(pi) != "=" or at(pi + 1) != "]":
                return _NOMATCH, pi
            pi += 2
        elif c == "[" and at(pi) == ".":
            while True:
                pi += 1
                c = at(pi)
                if c == "\0":
                    return _NOMATCH, pi
                if c == "." and at(pi + 1) == "]":
                    break
            pi += 2
    return (0 if negate else 1), pi


Matcher = Callable[[str], bool]


def compile_pattern(pattern: str) -> Matcher:
    """An exact, fast matcher for one pattern (see the module docstring)."""
    if "\0" in pattern:
        pattern = pattern.split("\0", 1)[0]
    if "[" in pattern or "\\" in pattern:
        return lambda s: fnmatch(pattern, s)
    if "?" in pattern:
        return question_matcher(pattern)
    if "*" not in pattern:
        return pattern.__eq__
    return star_matcher(pattern)


def match(pattern: str, string: str) -> bool:
    """fnmatch without building a matcher: the `*`-only fast path, else the general one."""
    if "?" in pattern or "[" in pattern or "\\" in pattern or "\0" in pattern:
        return fnmatch(pattern, string)
    if "*" not in pattern:
        return pattern == string
    parts = pattern.split("*")
    head = parts[0]
    tail = parts[-1]
    if len(string) < len(head) + len(tail) or not string.startswith(head):
        return False
    if not string.endswith(tail):
        return False
    pos = len(head)
    end = len(string) - len(tail)
    for m in parts[1:-1]:
        if m:
            pos = string.find(m, pos, end)
            if pos < 0:
                return False
            pos += len(m)
    return True


class _Segment:
    """A `*`-free piece of a pattern: its length and its literal runs (offset, text)."""

    __slots__ = ("anchor", "length", "runs")

    def __init__(self, text: str) -> None:
        self.length = len(text)
        self.runs = tuple((m.start(), m.group()) for m in _LITERAL_RUN.finditer(text))
        # Search for the longest run; the others are checked where it lands.
        self.anchor = max(self.runs, key=lambda r: len(r[1])) if self.runs else None

    def at(self, s: str, pos: int) -> bool:
        return all(s.startswith(lit, pos + off) for off, lit in self.runs)

    def find(self, s: str, pos: int, end: int) -> int:
        """Leftmost position >= pos where the segment fits before `end`, or -1."""
        last = end - self.length
        if self.anchor is None:
            return pos if pos <= last else -1
        off, lit = self.anchor
        while pos <= last:
            hit = s.find(lit, pos + off, last + off + len(lit))
            if hit < 0:
                return -1
            start = hit - off
            if self.at(s, start):
                return start
            pos = start + 1
        return -1


_LITERAL_RUN = re.compile(r"[^?]+")


def question_matcher(pattern: str) -> Matcher:
    """Matcher for a pattern of literals, `?` and `*` (no brackets, no backslashes)."""
    segs = [_Segment(p) for p in pattern.split("*")]
    head = segs[0]
    if len(segs) == 1:
        return lambda s: len(s) == head.length and head.at(s, 0)
    tail = segs[-1]
    mids = segs[1:-1]
    fixed = head.length + tail.length

    def match(s: str) -> bool:
        n = len(s)
        if n < fixed or not head.at(s, 0) or not tail.at(s, n - tail.length):
            return False
        pos = head.length
        end = n - tail.length
        for m in mids:
            pos = m.find(s, pos, end)
            if pos < 0:
                return False
            pos += m.length
        return True

    return match


def star_matcher(pattern: str) -> Matcher:
    """Matcher for a pattern made of literals and `*` only."""
    parts = pattern.split("*")
    head = parts[0]
    tail = parts[-1]
    mids = tuple(m for m in parts[1:-1] if m)
    fixed = len(head) + len(tail)

    def match(s: str) -> bool:
        if len(s) < fixed or not s.startswith(head) or not s.endswith(tail):
            return False
        pos = len(head)
        end = len(s) - len(tail)
        for m in mids:
            pos = s.find(m, pos, end)
            if pos < 0:
                return False
            pos += len(m)
        return True

    return match
