"""GNU `getopt_long` as glibc 2.36 does it, messages included.

kmod's tools parse their arguments with getopt_long, and scripts see its behaviour:
arguments are permuted (options may follow operands) until `--`; long options may be
abbreviated to any unambiguous prefix (an exact name always wins, and prefixes that all
stand for the same option are not ambiguous); `--name=value` and `--name value` both work
for options that take a value; short options cluster (`-vvv`, `-Cfile`). Errors print
glibc's exact text on stderr and yield `?`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

NO_ARGUMENT = 0
REQUIRED_ARGUMENT = 1


@dataclass(frozen=True, slots=True)
class LongOption:
    name: str
    has_arg: int
    val: str | int  # what getopt returns for it


@dataclass(frozen=True, slots=True)
class Parsed:
    """The options found, in order, as (value, argument) pairs, and the operands."""

    options: list[tuple[str | int, str | None]]
    operands: list[str]
    error: bool  # getopt returned '?' at some point (the tools stop at the first one)


def getopt_long(
    argv: Sequence[str],
    shortopts: str,
    longopts: Sequence[LongOption],
    err: Callable[[str], None],
    *,
    stop_at_first_error: bool = True,
) -> Parsed:
    """Parse argv[1:]; `err` receives each error message (with its newline)."""
    prog = argv[0] if argv else ""
    short_arg = _short_table(shortopts)
    options: list[tuple[str | int, str | None]] = []
    operands: list[str] = []
    args = list(argv[1:])
    i = 0
    error = False
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        if arg.startswith("--"):
            body = arg[2:]
            name, eq, value = body.partition("=")
            opt, problem = _find_long(name, longopts)
            if problem == "unrecognized":
                err(f"{prog}: unrecognized option '--{body}'\n")
                error = True
            elif problem is not None:
                err(f"{prog}: option '--{name}' is ambiguous; possibilities:{problem}\n")
                error = True
            else:
                assert opt is not None
                if eq:
                    if opt.has_arg == NO_ARGUMENT:
                        err(f"{prog}: option '--{opt.name}' doesn't allow an argument\n")
                        error = True
                    else:
                        options.append((opt.val, value))
                elif opt.has_arg == REQUIRED_ARGUMENT:
                    if i < len(args):
                        options.append((opt.val, args[i]))
                        i += 1
                    else:
                        err(f"{prog}: option '--{opt.name}' requires an argument\n")
                        error = True
                else:
                    options.append((opt.val, None))
            if error and stop_at_first_error:
                return Parsed(options, operands, True)
            continue
        # a cluster of short options
        j = 1
        while j < len(arg):
            ch = arg[j]
            j += 1
            if ch not in short_arg or ch == ":":
                err(f"{prog}: invalid option -- '{ch}'\n")
                error = True
                if stop_at_first_error:
                    return Parsed(options, operands, True)
                continue
            if short_arg[ch]:
                if j < len(arg):
                    options.append((ch, arg[j:]))
                elif i < len(args):
                    options.append((ch, args[i]))
                    i += 1
                else:
                    err(f"{prog}: option requires an argument -- '{ch}'\n")
                    error = True
                    if stop_at_first_error:
                        return Parsed(options, operands, True)
                break
            options.append((ch, None))
    return Parsed(options, operands, error)


def _short_table(shortopts: str) -> dict[str, bool]:
    table: dict[str, bool] = {}
    k = 0
    spec = shortopts.lstrip("+-")
    while k < len(spec):
        ch = spec[k]
        takes = k + 1 < len(spec) and spec[k + 1] == ":"
        table[ch] = takes
        k += 2 if takes else 1
    return table


def _find_long(
    name: str, longopts: Sequence[LongOption]
) -> tuple[LongOption | None, str | None]:
    for opt in longopts:
        if opt.name == name:
            return opt, None
    first: LongOption | None = None
    marked: list[int] = []
    first_index = -1
    for idx, opt in enumerate(longopts):
        if not opt.name.startswith(name):
            continue
        if first is None:
            first = opt
            first_index = idx
        elif opt.has_arg != first.has_arg or opt.val != first.val:
            if not marked:
                marked.append(first_index)
            marked.append(idx)
    if first is None:
        return None, "unrecognized"
    if marked:
        return None, "".join(f" '--{longopts[k].name}'" for k in marked)
    return first, None
