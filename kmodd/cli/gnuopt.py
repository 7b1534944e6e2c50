"""GNU `getopt_long` as the kmod tools use it, with glibc's exact error messages.

Options are handed out one at a time, in command-line order, so a tool can act on `-h` before
a later bad option is even looked at, as the C tools do. Arguments that are not options are
collected (GNU permutation) and are in `operands` once the options are exhausted. Long
options may be abbreviated to any unique prefix; an exact match wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum
from typing import NamedTuple


class Arg(Enum):
    NONE = 0
    REQUIRED = 1
    OPTIONAL = 2


class LongOpt(NamedTuple):
    name: str
    arg: Arg
    short: str  # the short option it stands for


class Opt(NamedTuple):
    """An option found: its short letter and its argument (if it takes one)."""

    key: str
    value: str | None


class OptError(NamedTuple):
    """A bad option; `message` is glibc's text, newline included (getopt returned '?')."""

    message: str


def _parse_short_spec(spec: str) -> dict[str, Arg]:
    out: dict[str, Arg] = {}
    i = 0
    if spec[:1] in ("+", "-"):
        i = 1
    while i < len(spec):
        c = spec[i]
        i += 1
        if spec[i:i + 2] == "::":
            out[c] = Arg.OPTIONAL
            i += 2
        elif spec[i:i + 1] == ":":
            out[c] = Arg.REQUIRED
            i += 1
        else:
            out[c] = Arg.NONE
    return out


class GetoptLong:
    """One pass of getopt_long over `argv` (argv[0] is the program name, used in messages)."""

    def __init__(self, argv: Sequence[str], shortopts: str,
                 longopts: Sequence[LongOpt]) -> None:
        self.prog = argv[0] if argv else ""
        self.args = list(argv[1:])
        self.shorts = _parse_short_spec(shortopts)
        self.longs = tuple(longopts)
        self.operands: list[str] = []

    def __iter__(self) -> Iterator[Opt | OptError]:
        args = self.args
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                self.operands.extend(args[i:])
                return
            if arg.startswith("--"):
                result, i = self._long(arg[2:], args, i)
                yield result
            elif arg.startswith("-") and arg != "-":
                j = 1
                while j < len(arg):
                    c = arg[j]
                    j += 1
                    kind = self.shorts.get(c) if c != ":" else None
                    if kind is None:
                        yield OptError(f"{self.prog}: invalid option -- '{c}'\n")
                        continue
                    if kind is Arg.NONE:
                        yield Opt(c, None)
                        continue
                    if j < len(arg):
                        yield Opt(c, arg[j:])
                    elif kind is Arg.OPTIONAL:
                        yield Opt(c, None)
                    elif i < len(args):
                        yield Opt(c, args[i])
                        i += 1
                    else:
                        yield OptError(f"{self.prog}: option requires an argument -- '{c}'\n")
                    break
            else:
                self.operands.append(arg)

    def _long(self, text: str, args: list[str], i: int) -> tuple[Opt | OptError, int]:
        name, eq, value = text.partition("=")
        exact = [o for o in self.longs if o.name == name]
        matches = exact or [o for o in self.longs if o.name.startswith(name)]
        if not matches:
            return OptError(f"{self.prog}: unrecognized option '--{text}'\n"), i
        first = matches[0]
        # glibc lists the first match and every later one that differs from it; matches that
        # stand for the same option as the first are not ambiguous and are not listed.
        differing = [o for o in matches[1:] if (o.arg, o.short) != (first.arg, first.short)]
        if differing:
            names = "".join(f" '--{o.name}'" for o in [first, *differing])
            return OptError(f"{self.prog}: option '--{text}' is ambiguous; possibilities:"
                            f"{names}\n"), i
        if eq:
            if first.arg is Arg.NONE:
                return OptError(f"{self.prog}: option '--{first.name}' doesn't allow an "
                                "argument\n"), i
            return Opt(first.short, value), i
        if first.arg is Arg.REQUIRED:
            if i < len(args):
                return Opt(first.short, args[i]), i + 1
            return OptError(f"{self.prog}: option '--{first.name}' requires an argument\n"), i
        return Opt(first.short, None), i
