"""Turn a systemd service unit into the command line systemd would run (the e2e loader hook).

The e2e tests start kmodd "as systemd would": from `[Service]` they take `ExecStart=`
(prefixes `-`, `@`, `:`, `+`, `!`, `!!`; `$VAR`/`${VAR}` expansion), `Environment=` (quoted
assignments, later ones win) and `EnvironmentFile=` (optional with `-`), and `Type=` (notify
means: wait for READY=1 on $NOTIFY_SOCKET). Specifiers other than `%%` are not supported and
are reported, as is anything the hook cannot honour, rather than silently run differently.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

EXEC_PREFIXES = "-@:+!"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class UnitError(ValueError):
    """The unit cannot be turned into one command line; the message names the line."""


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    argv: tuple[str, ...]
    env: dict[str, str]
    notify: bool  # Type=notify (or notify-reload)
    type: str


def parse_sections(text: str, name: str = "unit") -> dict[str, list[tuple[int, str, str]]]:
    """Section -> [(line number, key, value)], with continuation lines joined."""
    sections: dict[str, list[tuple[int, str, str]]] = {}
    current: list[tuple[int, str, str]] | None = None
    pending = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            if not pending:
                start = lineno
            pending += line[:-1] + " "
            continue
        if pending:
            line, lineno, pending = pending + line, start, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if "=" not in line:
            raise UnitError(f"{name}:{lineno}: not a KEY=VALUE line: {line!r}")
        if current is None:
            raise UnitError(f"{name}:{lineno}: assignment outside of a section")
        key, value = line.split("=", 1)
        current.append((lineno, key.strip(), value.strip()))
    return sections


def parse_env_assignments(value: str, where: str) -> dict[str, str]:
    """`Environment=` value: whitespace-separated (optionally quoted) KEY=VALUE words."""
    out: dict[str, str] = {}
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise UnitError(f"{where}: {e}") from None
    for w in words:
        if "=" not in w or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", w.split("=", 1)[0]):
            raise UnitError(f"{where}: not an assignment: {w!r}")
        k, v = w.split("=", 1)
        out[k] = v
    return out


def parse_env_file(text: str) -> dict[str, str]:
    """An EnvironmentFile: KEY=VALUE lines, # and ; comments, optional quotes."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _expand(words: list[str], env: dict[str, str]) -> list[str]:
    """systemd's rules: a word that is exactly $VAR splits into words; ${VAR} is inline."""
    out: list[str] = []
    for w in words:
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            out += env.get(m.group(1), "").split()
            continue
        out.append(_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), w))
    return out


def service_command(text: str, name: str = "kmodd.service",
                    read_file: Callable[[str], str | None] | None = None) -> ServiceCommand:
    """The argv, environment and readiness protocol systemd would use for this service.

    `read_file(path)` returns a file's text or None if it does not exist (for
    EnvironmentFile=); without it, an EnvironmentFile= line is an error.
    """
    service = parse_sections(text, name).get("Service")
    if service is None:
        raise UnitError(f"{name}: no [Service] section")
    exec_start: tuple[int, str] | None = None
    env: dict[str, str] = {}
    stype = "simple"
    for lineno, key, value in service:
        where = f"{name}:{lineno}"
        if key == "ExecStart":
            if not value:
                exec_start = None  # an empty assignment resets the list
            elif exec_start is not None:
                raise UnitError(f"{where}: more than one ExecStart= (only oneshot allows that)")
            else:
                exec_start = (lineno, value)
        elif key == "Environment":
            env.update(parse_env_assignments(value, where))
        elif key == "EnvironmentFile":
            optional = value.startswith("-")
            path = value.lstrip("-")
            if read_file is None:
                raise UnitError(f"{where}: EnvironmentFile= needs a way to read {path}")
            content = read_file(path)
            if content is None:
                if not optional:
                    raise UnitError(f"{where}: EnvironmentFile {path} does not exist")
                continue
            env.update(parse_env_file(content))
        elif key == "Type":
            stype = value
    if exec_start is None:
        raise UnitError(f"{name}: [Service] has no ExecStart=")
    lineno, value = exec_start
    where = f"{name}:{lineno}"
    prefix = ""
    while value and value[0] in EXEC_PREFIXES:
        prefix += value[0]
        value = value[1:]
    if re.search(r"%[^%]", value.replace("%%", "")):
        raise UnitError(f"{where}: unit specifiers (%x) are not supported: {value!r}")
    try:
        words = shlex.split(value.replace("%%", "%"))
    except ValueError as e:
        raise UnitError(f"{where}: {e}") from None
    words = _expand(words, env)
    if "@" in prefix:
        # '@': the second word is argv[0]; the first is the file to execute
        if len(words) < 2:
            raise UnitError(f"{where}: '@' needs an argv[0] after the executable")
        raise UnitError(f"{where}: '@' (custom argv[0]) is not supported by the e2e hook")
    if not words:
        raise UnitError(f"{where}: ExecStart= names no command")
    # A bare name is looked up in PATH, as systemd >= 239 does in its fixed search path.
    return ServiceCommand(argv=tuple(words), env=env,
                          notify=stype in ("notify", "notify-reload"), type=stype)
