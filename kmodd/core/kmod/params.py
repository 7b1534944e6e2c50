"""Module parameters as Linux 6.1 parses them at load time (`kernel/params.c`).

`split_args` cuts an option string the way the kernel's `next_arg` does (quotes allowed,
`--` ends the list); `check_value` says whether the kernel accepts a value for a parameter
of a given `parmtype` (`int`, `bool`, `charp`, `array of int`, ...), and why not. An
unknown parameter is not an error in 6.1: the kernel logs "unknown parameter 'x' ignored"
and loads the module; a value it refuses makes the load fail with EINVAL.
"""

from __future__ import annotations

from collections.abc import Mapping

#: parmtype -> (least, greatest) for the integer types (STANDARD_PARAM_DEF).
INT_RANGES: Mapping[str, tuple[int, int]] = {
    "byte": (0, 0xFF), "short": (-(1 << 15), (1 << 15) - 1), "ushort": (0, 0xFFFF),
    "int": (-(1 << 31), (1 << 31) - 1), "uint": (0, 0xFFFFFFFF),
    "long": (-(1 << 63), (1 << 63) - 1), "ulong": (0, (1 << 64) - 1),
    "ullong": (0, (1 << 64) - 1), "hexint": (0, 0xFFFFFFFF),
}
BOOL_TYPES = frozenset({"bool", "invbool", "bint"})
#: Names every module accepts without declaring them (the dynamic debug and async probe
#: hooks in `unknown_module_param_cb`).
IMPLICIT_PARAMETERS = frozenset({"async_probe", "dyndbg"})
ARRAY_PREFIX = "array of "


def next_arg(args: str) -> tuple[str, str | None, str]:
    """The kernel's `next_arg`: one `param[=value]` (quotes stripped), and the rest."""
    in_quote = False
    equals = -1
    quoted = args.startswith('"')
    if quoted:
        args = args[1:]
        in_quote = True
    i = 0
    while i < len(args):
        c = args[i]
        if c.isspace() and not in_quote:
            break
        if equals < 0 and c == "=":
            equals = i
        if c == '"':
            in_quote = not in_quote
        i += 1
    token, rest = args[:i], args[i + 1:].lstrip()
    if equals < 0:
        name = token[:-1] if quoted and token.endswith('"') else token
        return name, None, rest
    name, value = token[:equals], token[equals + 1:]
    if value.startswith('"'):
        value = value[1:]
        if value.endswith('"'):
            value = value[:-1]
    if quoted and value.endswith('"'):
        value = value[:-1]
    return name, value, rest


def split_args(args: str) -> list[tuple[str, str | None]]:
    """Every (name, value) in an option string, as `parse_args` walks it."""
    out: list[tuple[str, str | None]] = []
    rest = args.lstrip()
    while rest:
        name, value, rest = next_arg(rest)
        if value is None and name == "--":
            break
        out.append((name, value))
    return out


def _kstrtobool(value: str | None) -> bool | None:
    if value is None:
        return True
    first, second = value[:1], value[1:2]
    if first in ("y", "Y", "1"):
        return True
    if first in ("n", "N", "0"):
        return False
    if first in ("o", "O") and second in ("n", "N"):
        return True
    if first in ("o", "O") and second in ("f", "F"):
        return False
    return None


def _kstrtoint(text: str, lo: int, hi: int) -> int | None:
    """kstrto*(s, 0, ...): optional sign, 0x and 0 prefixes, one trailing newline, range."""
    s = text[:-1] if text.endswith("\n") else text
    negative = False
    if s[:1] == "+":
        s = s[1:]
    elif s[:1] == "-" and lo < 0:
        negative, s = True, s[1:]
    base = 10
    if s[:2].lower() == "0x" and len(s) > 2:
        base, s = 16, s[2:]
    elif s[:1] == "0" and len(s) > 1:
        base, s = 8, s[1:]
    if not s or not s.isascii() or not s.isalnum():
        return None
    try:
        value = int(s, base)
    except ValueError:
        return None
    value = -value if negative else value
    return value if lo <= value <= hi else None


def check_value(ptype: str, value: str | None) -> str | None:
    """None when the kernel accepts `value` for a parameter of type `ptype`, else why not.

    Types the kernel checks no further (charp, string, custom ones) accept any value.
    """
    if ptype.startswith(ARRAY_PREFIX):
        if value is None:
            return "an array parameter needs a value"
        element = ptype.removeprefix(ARRAY_PREFIX)
        for part in value.split(","):
            why = check_value(element, part)
            if why is not None:
                return why
        return None
    if ptype in BOOL_TYPES:
        if _kstrtobool(value) is None:
            return "not a boolean (y, n, 1, 0, on, off)"
        return None
    if value is None:
        return None if ptype not in INT_RANGES else "a number is needed"
    if ptype in INT_RANGES:
        lo, hi = INT_RANGES[ptype]
        if _kstrtoint(value, lo, hi) is None:
            return f"not a number in the range of {ptype} ({lo}..{hi})"
    return None


def parameter_types(parmtypes: list[str]) -> dict[str, str]:
    """`parmtype=name:type` values of .modinfo -> {name: type} (the first one counts)."""
    types: dict[str, str] = {}
    for entry in parmtypes:
        name, sep, ptype = entry.partition(":")
        if sep:
            types.setdefault(name, ptype)
    return types


def find_parameter(types: Mapping[str, str], name: str) -> str | None:
    """The declared name `name` refers to (`-` and `_` are the same to the kernel)."""
    wanted = name.replace("-", "_")
    return next((p for p in types if p.replace("-", "_") == wanted), None)
