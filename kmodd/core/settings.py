"""The daemon's settings: one table, four sources, every bad value reported and ignored.

Sources, later ones winning: the defaults in `SETTINGS` < the config file (`/etc/kmodd.conf`)
< the daemon's command line (`--name=value`) < the kernel command line (`kmodd.name=value`).
The kernel command line wins because it is what an admin can still change when a broken
setting keeps the system from booting.

Config file format (documented in `etc/kmodd.conf`): one `name = value` per line; `#` starts
a comment line; blank lines are ignored; `-` and `_` in names are the same; a value may be
wrapped in double quotes; a later line for the same name wins. Values by kind: sizes are
bytes with an optional K, M or G suffix (powers of 1024); durations are seconds with an
optional `ms`, `s` or `min` suffix; booleans are yes/no, true/false, on/off or 1/0.

Bad input never stops the daemon: an unknown name, a bad value or a malformed line becomes a
`Diagnostic` ("/etc/kmodd.conf:3: ..., ignoring") and the previous value stays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum

#: Program name used in argv diagnostics.
PROGRAM = "kmodd"
#: Prefix of kmodd's parameters on the kernel command line.
KERNEL_PREFIX = "kmodd."
#: Where the config file lives (under the Root).
CONFIG_FILE = "/etc/kmodd.conf"
#: Longest config file read, in bytes; the rest is reported and ignored.
MAX_CONFIG_BYTES = 1 << 20


class Kind(StrEnum):
    BOOL = "boolean"
    INT = "integer"
    SIZE = "size"
    DURATION = "duration"
    PATH = "path"
    CHOICE = "choice"
    GROUP = "group"
    ALIASES = "aliases"


Value = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table."""

    name: str
    kind: Kind
    default: Value
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


_M = 1024 * 1024

#: Every daemon setting, in the order `kmodd --help` and `etc/kmodd.conf` list them.
SETTINGS: tuple[Setting, ...] = (
    Setting("receive_buffer", Kind.SIZE, 128 * _M,
            "kernel uevent socket receive buffer (SO_RCVBUFFORCE, else SO_RCVBUF)",
            minimum=4096, maximum=2047 * _M),
    Setting("intake_queue", Kind.INT, 8192,
            "uevents waiting to be resolved; when full, the daemon resynchronises from sysfs",
            minimum=16, maximum=1 << 20),
    Setting("parallel_loads", Kind.INT, 0,
            "module loads run at once (0: 64)", minimum=0, maximum=256),
    Setting("coldplug", Kind.BOOL, True, "scan sysfs for devices after start-up"),
    Setting("static_rules", Kind.BOOL, True,
            "also load what Debian's udev rules load without a modalias (sg, ppdev, ...)"),
    Setting("modules_load", Kind.BOOL, False,
            "load the modules that modules-load.d, modules_load= on the kernel command line "
            "and /etc/modules name, at start, in the place of systemd-modules-load.service "
            "(which then stands aside)"),
    Setting("dry_run", Kind.BOOL, False, "decide and log, but never load or unload"),
    Setting("index_in_memory", Kind.BOOL, True,
            "decode the module index into memory after start-up (fast lookups; about 25 MB "
            "for a distribution kernel); no: answer from the mapped index files"),
    Setting("watch_config", Kind.BOOL, True,
            "reload when modprobe.d or the module index change (inotify)"),
    Setting("reload_debounce", Kind.DURATION, 0.5,
            "quiet time after a config or index change before reloading",
            minimum=0.0, maximum=60.0),
    Setting("reload_max_delay", Kind.DURATION, 5.0,
            "longest a reload waits for a busy directory to go quiet",
            minimum=0.0, maximum=600.0),
    Setting("install_timeout", Kind.DURATION, 30.0,
            "how long an `install` command from modprobe.d may run", minimum=0.1, maximum=3600.0),
    Setting("stop_timeout", Kind.DURATION, 10.0,
            "how long shutdown waits for loads in progress", minimum=0.0, maximum=600.0),
    Setting("kernel_requests", Kind.BOOL, True,
            "record the kernel's own module requests (module:module_request, through kmodd's "
            "trace instance in tracefs): the alias, the process that caused it, what loaded"),
    Setting("autoload_deny", Kind.ALIASES, "",
            "aliases the kernel may not autoload (net-pf-33 fs-cramfs ...): kmodd writes "
            "`install ALIAS /bin/false` for each to /run/modprobe.d/kmodd-autoload-policy.conf "
            "and logs each refused request; the module's own name still loads"),
    Setting("log_level", Kind.CHOICE, "info", "lowest priority that is logged",
            choices=("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")),
    Setting("log_target", Kind.CHOICE, "auto",
            "journal, stderr, or auto (the journal when its socket exists)",
            choices=("auto", "journal", "stderr")),
    Setting("control_socket", Kind.PATH, "/run/kmodd/io.kmodd",
            "Varlink control socket (unless socket-activated)"),
    Setting("control_group", Kind.GROUP, "",
            "group whose members may call changing methods besides root (empty: root only)"),
    Setting("control_max_connections", Kind.INT, 64,
            "control connections open at once; more are refused", minimum=1, maximum=65536),
    Setting("control_max_request", Kind.SIZE, 64 * 1024,
            "largest control request, in bytes", minimum=1024, maximum=16 * _M),
    Setting("control_idle_timeout", Kind.DURATION, 60.0,
            "control connections idle this long are closed", minimum=0.1, maximum=86400.0),
    Setting("control_request_timeout", Kind.DURATION, 10.0,
            "a started control request must arrive whole within this time",
            minimum=0.1, maximum=3600.0),
    Setting("control_max_connections_per_user", Kind.INT, 8,
            "control connections one unprivileged user may hold open at once",
            minimum=1, maximum=65536),
    Setting("control_reserved_connections", Kind.INT, 8,
            "of control_max_connections, how many are kept for root and control_group "
            "(at most half)", minimum=0, maximum=65536),
    Setting("control_request_rate", Kind.INT, 20,
            "requests per second an unprivileged control connection may send on average",
            minimum=1, maximum=100000),
    Setting("control_request_burst", Kind.INT, 40,
            "requests an unprivileged control connection may send at once",
            minimum=1, maximum=100000),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective values, one attribute per row of `SETTINGS` (same names)."""

    receive_buffer: int
    intake_queue: int
    parallel_loads: int
    coldplug: bool
    static_rules: bool
    modules_load: bool
    dry_run: bool
    index_in_memory: bool
    watch_config: bool
    reload_debounce: float
    reload_max_delay: float
    install_timeout: float
    stop_timeout: float
    kernel_requests: bool
    autoload_deny: str
    log_level: str
    log_target: str
    control_socket: str
    control_group: str
    control_max_connections: int
    control_max_request: int
    control_idle_timeout: float
    control_request_timeout: float
    control_max_connections_per_user: int
    control_reserved_connections: int
    control_request_rate: int
    control_request_burst: int


def defaults() -> Settings:
    """The settings when no source says anything."""
    return Settings(**{s.name: s.default for s in SETTINGS})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A bad input that was ignored: where (file, `argv`, `kernel command line`) and why."""

    source: str
    line: int | None
    message: str

    @property
    def text(self) -> str:
        """The log line: `file:line: message, ignoring`."""
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}, ignoring"


_SIZE = re.compile(r"(\d+)\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min)?", re.IGNORECASE)
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10}")
_SIZE_FACTORS = {"": 1, "K": 1024, "M": _M, "G": 1024 * _M}
_DURATION_FACTORS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0}
_TRUE = frozenset({"1", "yes", "true", "on", "y"})
_FALSE = frozenset({"0", "no", "false", "off", "n"})
#: What each kind expects, for the "expected ..." part of a diagnostic.
_EXPECTED: Mapping[Kind, str] = {
    Kind.BOOL: "yes or no",
    Kind.INT: "a whole number",
    Kind.SIZE: "a size like 128M",
    Kind.DURATION: "a duration like 500ms or 10s",
    Kind.PATH: "an absolute path",
    Kind.CHOICE: "one of",
    Kind.GROUP: "a group name or number",
    Kind.ALIASES: "module aliases separated by spaces or commas",
}


class BadValue(ValueError):
    pass


def parse_value(setting: Setting, text: str) -> Value:
    """Convert `text` to the setting's type and check its range; raise BadValue with a reason."""
    value = _convert(setting, text.strip())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if setting.minimum is not None and value < setting.minimum:
            raise BadValue(f"{text!r} for {setting.name} is below the minimum {setting.minimum:g}")
        if setting.maximum is not None and value > setting.maximum:
            raise BadValue(f"{text!r} for {setting.name} is above the maximum {setting.maximum:g}")
    return value


def _convert(setting: Setting, text: str) -> Value:
    expected = _EXPECTED[setting.kind]
    bad = BadValue(f"invalid value {text!r} for {setting.name}: expected {expected}")
    match setting.kind:
        case Kind.BOOL:
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise bad
        case Kind.INT:
            if not re.fullmatch(r"\d{1,12}", text):
                raise bad
            return int(text)
        case Kind.SIZE:
            m = _SIZE.fullmatch(text)
            if not m or len(m.group(1)) > 15:
                raise bad
            return int(m.group(1)) * _SIZE_FACTORS[m.group(2).upper()]
        case Kind.DURATION:
            m = _DURATION.fullmatch(text)
            if not m or len(m.group(1)) > 15:
                raise bad
            unit = m.group(2).lower() if m.group(2) else None
            return float(m.group(1)) * _DURATION_FACTORS[unit]
        case Kind.PATH:
            if not text.startswith("/") or "\0" in text:
                raise bad
            return text
        case Kind.CHOICE:
            if text.lower() not in setting.choices:
                raise BadValue(
                    f"invalid value {text!r} for {setting.name}: expected one of "
                    + ", ".join(setting.choices)
                )
            return text.lower()
        case Kind.GROUP:
            if text and not _GROUP.fullmatch(text):
                raise bad
            return text
        case Kind.ALIASES:
            # Imported here, for a value to check: the trace parser's module is kept out of
            # bench/bench_daemon.py's READY (the default list is empty).
            from kmodd.core.autoload.ktrace import parse_deny_list

            aliases, problems = parse_deny_list(text)
            if problems:
                raise BadValue(f"invalid value {text!r} for {setting.name}: {problems[0]}")
            return " ".join(aliases)
    raise AssertionError(setting.kind)  # pragma: no cover - every kind is matched above


def _canonical(name: str) -> str:
    return name.strip().replace("-", "_").lower()


@dataclass(slots=True)
class _Layer:
    """Values one source sets, with the diagnostics it produced."""

    values: dict[str, Value] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def set(self, source: str, line: int | None, name: str, text: str) -> None:
        setting = SETTINGS_BY_NAME.get(_canonical(name))
        if setting is None:
            self.diagnostics.append(Diagnostic(source, line, f"unknown setting {name!r}"))
            return
        try:
            self.values[setting.name] = parse_value(setting, text)
        except BadValue as e:
            self.diagnostics.append(Diagnostic(source, line, str(e)))


@dataclass(frozen=True, slots=True)
class SourceValues:
    """What one source said: values by setting name, and what it got wrong."""

    values: Mapping[str, Value]
    diagnostics: tuple[Diagnostic, ...]


def parse_config(text: str, filename: str = CONFIG_FILE) -> SourceValues:
    """Read the config file's `name = value` lines."""
    layer = _Layer()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            layer.diagnostics.append(
                Diagnostic(filename, number, f"expected 'name = value', got {line[:80]!r}")
            )
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        layer.set(filename, number, name.strip(), value)
    return SourceValues(layer.values, tuple(layer.diagnostics))


@dataclass(frozen=True, slots=True)
class Argv:
    """The daemon's command line: setting values plus the options that are not settings."""

    settings: SourceValues
    config_file: str | None = None
    show_help: bool = False
    show_version: bool = False
    root: str | None = None


#: Options that take a path and are not settings: `--config FILE`, `--root DIR` (a test root
#: that moves /sys, /proc, /etc, /run and /lib/modules).
PATH_OPTIONS = ("config", "root")


def parse_argv(argv: Sequence[str]) -> Argv:
    """`--name=value`, `--name value`, and `--name`/`--no-name` for booleans (argv[0] skipped).

    Also `--config FILE`, `--root DIR`, `--help` and `--version`.
    """
    layer = _Layer()
    source = "command line"
    paths: dict[str, str] = {}
    show_help = show_version = False
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            show_help = True
            continue
        if arg == "--version":
            show_version = True
            continue
        if not arg.startswith("--") or arg == "--":
            layer.diagnostics.append(Diagnostic(source, None, f"unexpected argument {arg!r}"))
            continue
        name, sep, value = arg[2:].partition("=")
        canonical = _canonical(name)
        if canonical in PATH_OPTIONS:
            if not sep:
                if i >= len(args):
                    layer.diagnostics.append(Diagnostic(source, None,
                                                        f"--{canonical} needs a path"))
                    continue
                value, i = args[i], i + 1
            paths[canonical] = value
            continue
        setting = SETTINGS_BY_NAME.get(canonical)
        negated = setting is None and canonical.startswith("no_")
        if negated:
            setting = SETTINGS_BY_NAME.get(canonical[3:])
        if setting is None:
            layer.diagnostics.append(Diagnostic(source, None, f"unknown option --{name}"))
            continue
        if setting.kind is Kind.BOOL and not sep:
            layer.values[setting.name] = not negated
            continue
        if negated:
            layer.diagnostics.append(Diagnostic(source, None, f"unknown option --{name}"))
            continue
        if not sep:
            if i >= len(args):
                layer.diagnostics.append(Diagnostic(source, None, f"--{name} needs a value"))
                continue
            value, i = args[i], i + 1
        layer.set(source, None, setting.name, value)
    values = SourceValues(layer.values, tuple(layer.diagnostics))
    return Argv(values, paths.get("config"), show_help, show_version, paths.get("root"))


def cmdline_words(text: str, quotes: str = '"') -> list[str]:
    """Split a kernel command line into words: whitespace separates, and a character of
    `quotes` groups everything up to the next same one, both vanishing. The kernel's own
    `next_arg` knows double quotes only (the default); systemd's parser takes single quotes
    too (`core.autoload.modulesload`)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    in_word = False
    for c in text:
        if quote:
            if c == quote:
                quote = ""
            else:
                current.append(c)
        elif c in quotes:
            quote, in_word = c, True
        elif c.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(c)
            in_word = True
    if in_word:
        words.append("".join(current))
    return words


def parse_kernel_cmdline(text: str) -> SourceValues:
    """`kmodd.name=value` words of /proc/cmdline (`kmodd.flag` alone sets a boolean)."""
    layer = _Layer()
    source = "kernel command line"
    for word in cmdline_words(text):
        if not word.startswith(KERNEL_PREFIX):
            continue
        name, sep, value = word[len(KERNEL_PREFIX) :].partition("=")
        setting = SETTINGS_BY_NAME.get(_canonical(name))
        if setting is not None and setting.kind is Kind.BOOL and not sep:
            layer.values[setting.name] = True
            continue
        layer.set(source, None, name, value)
    return SourceValues(layer.values, tuple(layer.diagnostics))


@dataclass(frozen=True, slots=True)
class Resolved:
    """Effective settings, where each value came from, and every ignored input."""

    settings: Settings
    origins: Mapping[str, str]
    diagnostics: tuple[Diagnostic, ...]


def resolve(
    config: SourceValues | None = None,
    argv: SourceValues | None = None,
    kernel: SourceValues | None = None,
    config_name: str = CONFIG_FILE,
) -> Resolved:
    """Merge the sources in precedence order (defaults < config < argv < kernel)."""
    values: dict[str, Value] = {s.name: s.default for s in SETTINGS}
    origins = dict.fromkeys(values, "default")
    diagnostics: list[Diagnostic] = []
    for name, layer in ((config_name, config), ("command line", argv),
                        ("kernel command line", kernel)):
        if layer is None:
            continue
        diagnostics.extend(layer.diagnostics)
        for key, value in layer.values.items():
            values[key] = value
            origins[key] = name
    return Resolved(Settings(**values), origins, tuple(diagnostics))  # type: ignore[arg-type]


def usage() -> str:
    """`kmodd --help`: every setting from the table, with its kind and default."""
    lines = [f"usage: {PROGRAM} [--config FILE] [--root DIR] [--NAME=VALUE ...]", "",
             "settings:"]
    for s in SETTINGS:
        default = s.default
        if isinstance(default, bool):
            shown = "yes" if default else "no"
        elif s.kind is Kind.SIZE and isinstance(default, int):
            shown = format_size(default)
        else:
            shown = str(default) if default != "" else '""'
        option = f"--{s.name.replace('_', '-')}"
        lines.append(f"  {option:<28} {s.description} ({s.kind.value}, default {shown})")
    return "\n".join(lines) + "\n"


def format_default(setting: Setting) -> str:
    """The default as the config file writes it: yes/no, 128M, 500ms or 10s, the text
    itself, or "" for an empty text (`parse_value` reads it back as the default)."""
    default = setting.default
    if isinstance(default, bool):
        return "yes" if default else "no"
    if setting.kind is Kind.SIZE and isinstance(default, int):
        return format_size(default)
    if setting.kind is Kind.DURATION and isinstance(default, float):
        if default < 1 and round(default * 1000) == default * 1000:
            return f"{round(default * 1000)}ms"
        return f"{default:g}s"
    return str(default) if default != "" else '""'


def format_size(size: int) -> str:
    """128M for 134217728: the largest unit that divides exactly."""
    for suffix, factor in (("G", 1024 * _M), ("M", _M), ("K", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def setting_names() -> tuple[str, ...]:
    """Names of the `Settings` attributes (the test checks they match `SETTINGS`)."""
    return tuple(f.name for f in fields(Settings))
