"""The static lists of modules to load at boot: modules-load.d, `modules_load=` and /etc/modules.

systemd-modules-load.service (`src/modules-load/modules-load.c`, modules-load.d(5)) loads:

1. first, every module named in `modules_load=` on the kernel command line: comma-separated
   lists, every occurrence adding to the list; systemd matches command line keys with `-` and
   `_` alike (`modules-load=` too), and reads `rd.modules_load=` in the initrd only (so a
   daemon of the booted system ignores it, as kmodd does);
2. then the lines of the `*.conf` files of `/etc/modules-load.d`, `/run/modules-load.d`,
   `/usr/local/lib/modules-load.d` and `/usr/lib/modules-load.d` (systemd built with
   split-usr, as Debian bookworm's 252, also reads `/lib/modules-load.d` last). A file name in
   an earlier directory hides the same name in later ones (so a symlink to /dev/null, or an
   empty file, in /etc masks a vendor's file); the files left are read in the order of their
   names, whatever their directories; hidden files (a leading dot) are not read. Each line is
   stripped of surrounding whitespace; empty lines and lines starting with `#` or `;` are
   skipped; the rest, whole, is the name looked up (systemd takes no arguments there).

Debian's kmod adds `/etc/modules` (modules(5)): one module per line, arguments after the name
(`#` starts a comment line). Since bookworm the kmod package ships
`/etc/modules-load.d/modules.conf -> ../modules`, so systemd-modules-load reads it as one more
list (and fails on a line with arguments, whose whole text it looks up); kmodd reads
/etc/modules the same way, through that link and in its place, but with Debian's format (the
first word is the name, the rest its arguments), so it is read once. Without the link nothing
on a Debian system with systemd reads /etc/modules (Debian's `kmod.service` is an alias of
systemd-modules-load.service), and neither does kmodd.

This module only decides: the caller lists the directories and reads the files
(`system.modulesload`). A module listed several times is loaded once, at its first place; the
other places are kept, so that `kmodctl why` can name them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kmodd.core.settings import cmdline_words

#: The directories systemd-modules-load reads, earlier ones winning (CONF_PATHS_NULSTR).
MODULES_LOAD_DIRS = (
    "/etc/modules-load.d",
    "/run/modules-load.d",
    "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d",
    "/lib/modules-load.d",  # split-usr builds (Debian bookworm); /usr/lib's twin on merged /usr
)
#: Debian's own list (kmod's modules(5)).
DEBIAN_MODULES = "/etc/modules"
#: Only files with this suffix are read (conf_files_list's suffix).
CONF_SUFFIX = ".conf"
#: Lines starting with one of these are comments (systemd's COMMENTS).
COMMENTS = "#;"
#: The kernel command line key, written as systemd matches it (`-` and `_` alike).
CMDLINE_KEY = "modules_load"
#: Where a module named on the kernel command line is said to come from.
CMDLINE_SOURCE = "the kernel command line (modules_load=)"


@dataclass(frozen=True, slots=True)
class Entry:
    """A `*.conf` name found in one directory.

    `masked`: a symlink to /dev/null or an empty file (nothing to read, but it hides the
    same name in later directories). `target`: the absolute path a symlink resolves to (None
    for a plain file), to see which file is /etc/modules.
    """

    name: str
    masked: bool = False
    target: str | None = None


@dataclass(frozen=True, slots=True)
class ListFile:
    """A file chosen to be read, in reading order."""

    path: str
    masked: bool = False
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Overridden:
    """A file not read because a file of the same name in an earlier directory wins."""

    path: str
    by: str


@dataclass(frozen=True, slots=True)
class Choice:
    """Which files are read, in which order, and which are hidden."""

    files: tuple[ListFile, ...]
    overridden: tuple[Overridden, ...]


@dataclass(frozen=True, slots=True)
class Listed:
    """One place a module is named: the file and line (line 0: the kernel command line)."""

    module: str
    source: str
    line: int = 0
    options: str = ""

    @property
    def where(self) -> str:
        """`/etc/modules-load.d/foo.conf:3`, or the kernel command line."""
        return f"{self.source}:{self.line}" if self.line else self.source


@dataclass(frozen=True, slots=True)
class ModuleToLoad:
    """A module to load, where it is named first, and every other place it is named."""

    module: str
    first: Listed
    also: tuple[Listed, ...] = ()

    @property
    def places(self) -> tuple[Listed, ...]:
        return (self.first, *self.also)


def choose_files(listings: Sequence[tuple[str, Iterable[Entry]]]) -> Choice:
    """`listings`: each directory (in precedence order) with the entries found in it.

    conf_files_list's rules: names ending in `.conf`, not hidden; the first directory to hold
    a name wins it; the winners sorted by name (strcmp: code point order).
    """
    chosen: dict[str, ListFile] = {}
    overridden: list[Overridden] = []
    for directory, entries in listings:
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or not name.endswith(CONF_SUFFIX) or "/" in name:
                continue
            path = f"{directory.rstrip('/')}/{name}"
            winner = chosen.get(name)
            if winner is not None:
                overridden.append(Overridden(path, winner.path))
                continue
            chosen[name] = ListFile(path, entry.masked, entry.target)
    files = tuple(chosen[name] for name in sorted(chosen))
    return Choice(files, tuple(overridden))


def normalize(name: str) -> str:
    """A module name as kmod compares it (`-` and `_` alike); an alias is left whole."""
    return name.replace("-", "_")


def parse_list(path: str, text: str) -> list[Listed]:
    """The names in one modules-load.d file, with their lines (systemd's format: the whole
    stripped line is the name)."""
    out: list[Listed] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in COMMENTS:
            continue
        out.append(Listed(line, path, number))
    return out


def parse_debian_modules(path: str, text: str) -> list[Listed]:
    """The names in Debian's /etc/modules: the first word is the name, the rest (if any) the
    module's arguments, as Debian's kmod init script passed them to modprobe; `#` (and, as in
    a modules-load.d file, `;`) starts a comment line."""
    out: list[Listed] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in COMMENTS:
            continue
        name, _, options = line.partition(" ") if " " in line else line.partition("\t")
        out.append(Listed(name, path, number, " ".join(options.split())))
    return out


def cmdline_modules(cmdline: str) -> list[Listed]:
    """Every module named by `modules_load=` (or `modules-load=`) on the kernel command line,
    in order; `rd.modules_load=` is the initrd's and a key without a value names nothing."""
    out: list[Listed] = []
    for word in cmdline_words(cmdline, quotes="\"'"):
        key, sep, value = word.partition("=")
        if not sep or key.replace("-", "_") != CMDLINE_KEY:
            continue
        out.extend(Listed(name, CMDLINE_SOURCE) for name in value.split(",") if name)
    return out


def collect(cmdline: str, choice: Choice, texts: Mapping[str, str | None]) -> list[ModuleToLoad]:
    """The modules to load, in systemd-modules-load's order: the kernel command line's, then
    each chosen file's lines (a file that resolves to /etc/modules read with Debian's
    format, and named as /etc/modules, whose lines they are). `texts`: each chosen file's
    text (None: it could not be read; the caller said why). A module named twice is loaded
    at its first place."""
    listed: list[Listed] = cmdline_modules(cmdline)
    for f in choice.files:
        text = texts.get(f.path)
        if f.masked or text is None:
            continue
        if f.target == DEBIAN_MODULES:
            listed.extend(parse_debian_modules(DEBIAN_MODULES, text))
        else:
            listed.extend(parse_list(f.path, text))
    order: dict[str, tuple[Listed, list[Listed]]] = {}
    for item in listed:
        key = normalize(item.module)
        if key in order:
            order[key][1].append(item)
        else:
            order[key] = (item, [])
    return [ModuleToLoad(first.module, first, tuple(also)) for first, also in order.values()]
