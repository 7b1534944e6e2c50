"""depmod.d: which configuration files count, what they say, and which module copy wins.

kmod 30's `tools/depmod.c` (`cfg_load`, `cfg_file_parse`, `depmod_module_is_higher_priority`):

* Files come from `/etc/depmod.d`, `/run/depmod.d`, `/usr/local/lib/depmod.d` and
  `/lib/depmod.d` (or the `-C` paths), merged by file name: sorted by name, and a name seen in
  an earlier directory hides the same name later. Hidden files are skipped; other names must
  end in `.conf`.
* Commands: `search`, `override`, `external`, `exclude`; `include` and `make_map_files` are
  accepted but do nothing. Kernel versions are POSIX extended regexes, or `*`.
* kmod keeps every list by *prepending*, and its priority rules walk those lists. This module
  stores them the same way (newest first) so that the rules below read like kmod's.

Paths and text are Latin-1 strings: one character per byte, as everywhere in depmod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from kmodd.core.kmod.lines import logical_lines
from kmodd.core.priority import Priority

#: The `search` keywords that are not directories.
BUILTIN_KEY = "built-in"
EXTERNAL_KEY = "external"
#: The search list when no `search` line exists (kmod adds it for backward compatibility).
DEFAULT_SEARCH = "updates"
CONFIG_SUFFIX = ".conf"
_SEPARATORS = re.compile(r"[ \t]+")


@dataclass(frozen=True, slots=True)
class Message:
    """One line for the log: `depmod: <LEVEL>: <text>` (text ends in a newline)."""

    level: Priority
    text: str


class SearchType(StrEnum):
    PATH = "path"
    BUILTIN = "built-in"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Search:
    type: SearchType
    path: str = ""


@dataclass(frozen=True, slots=True)
class DepmodConfig:
    """The parsed depmod.d, lists newest-first as kmod keeps them."""

    kversion: str
    searches: tuple[Search, ...] = ()
    overrides: tuple[str, ...] = ()  # "<subdir>/<module name as written>", no extension
    externals: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    messages: tuple[Message, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class ConfigCandidate:
    """A directory entry, or a config path that is itself a file (`from_path`)."""

    directory: str
    name: str
    is_dir: bool = False
    from_path: bool = False


def order_config_files(
    listed: Iterable[ConfigCandidate],
) -> tuple[list[str], list[Message]]:
    """The config files to read, in kmod's order, and the notes about skipped entries.

    `listed` gives the entries of each config path in the order kmod meets them: the paths
    in order, each directory's entries in readdir order. A non-directory path is offered as
    itself (`directory` its parent, `name` its base name), exempt from the `.conf` rule.
    """
    chosen: dict[str, str] = {}
    messages: list[Message] = []
    for c in listed:
        if not c.from_path:
            if c.name.startswith("."):
                continue
            if len(c.name) < len(CONFIG_SUFFIX) + 1 or not c.name.endswith(CONFIG_SUFFIX):
                messages.append(Message(Priority.INFO,
                                        f"All cfg files need .conf: {c.directory}/{c.name}\n"))
                continue
            if c.is_dir:
                messages.append(Message(
                    Priority.ERR,
                    f"Directories inside directories are not supported: "
                    f"{c.directory}/{c.name}\n"))
                continue
        if c.name in chosen:
            continue  # the same name in an earlier directory wins
        chosen[c.name] = f"{c.directory}/{c.name}"
    return [chosen[name] for name in sorted(chosen, key=_c_order)], messages


def _c_order(name: str) -> bytes:
    return name.encode("latin-1")


def config_path_candidate(path: str) -> ConfigCandidate:
    """A config path that is a file rather than a directory (exempt from the .conf rule)."""
    slash = path.rfind("/")
    return ConfigCandidate(path[:slash] if slash >= 0 else "", path[slash + 1 :],
                           from_path=True)


def kernel_matches(pattern: str, kversion: str) -> bool:
    """kmod's `cfg_kernel_matches`: `*`, or an unanchored POSIX extended regex search."""
    if pattern == "*":
        return True
    try:
        return re.search(_posix_ere(pattern), kversion) is not None
    except re.error:
        return False  # regcomp() failed: kmod treats it as no match


_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "digit": "0-9",
    "lower": "a-z", "space": " \\t\\n\\r\\f\\v", "upper": "A-Z", "xdigit": "0-9A-Fa-f",
    "punct": "!-/:-@\\[-`{-~", "print": " -~", "graph": "!-~", "cntrl": "\\x00-\\x1f\\x7f",
}


def _posix_ere(pattern: str) -> str:
    """Translate the parts of POSIX ERE that Python's `re` spells differently."""
    out = pattern
    for name, chars in _POSIX_CLASSES.items():
        out = out.replace(f"[:{name}:]", chars)
    return out


@dataclass(slots=True)
class _Builder:
    searches: list[Search] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    externals: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


def parse_config(files: Sequence[tuple[str, bytes | None]], kversion: str) -> DepmodConfig:
    """Parse config files (path, contents; None when unreadable) in order, as kmod does."""
    b = _Builder()
    for path, data in files:
        if data is None:
            continue
        _parse_file(b, path, data, kversion)
    if not b.searches:
        b.searches.insert(0, Search(SearchType.PATH, DEFAULT_SEARCH))
    return DepmodConfig(kversion, tuple(b.searches), tuple(b.overrides), tuple(b.externals),
                        tuple(b.excludes), tuple(b.messages))


def _parse_file(b: _Builder, path: str, data: bytes, kversion: str) -> None:
    for lineno, line in logical_lines(data):
        if not line or line[0] == "#":
            continue
        words = [w for w in _SEPARATORS.split(line) if w]
        if not words:
            continue
        cmd, args = words[0], words[1:]
        if cmd == "search":
            for arg in args:
                if arg == BUILTIN_KEY:
                    b.searches.insert(0, Search(SearchType.BUILTIN))
                elif arg == EXTERNAL_KEY:
                    b.searches.insert(0, Search(SearchType.EXTERNAL))
                else:
                    b.searches.insert(0, Search(SearchType.PATH, arg))
        elif cmd == "override" and len(args) >= 3:
            modname, version, subdir = args[:3]
            if not kernel_matches(version, kversion):
                b.messages.append(Message(
                    Priority.INFO, f"{path}:{lineno}: override kernel did not match {version}\n"))
                continue
            b.overrides.insert(0, f"{subdir}/{modname}")
        elif cmd == "external" and len(args) >= 2:
            version, directory = args[:2]
            if not kernel_matches(version, kversion):
                b.messages.append(Message(
                    Priority.INFO,
                    f"{path}:{lineno}: external directory did not match {version}\n"))
                continue
            b.externals.insert(0, directory)
        elif cmd == "exclude":
            for arg in args:
                b.excludes.insert(0, arg)
        elif cmd in ("include", "make_map_files"):
            b.messages.append(Message(
                Priority.INFO, f"{path}:{lineno}: command {cmd} not implemented yet\n"))
        else:
            b.messages.append(Message(
                Priority.ERR, f"{path}:{lineno}: ignoring bad line starting with '{cmd}'\n"))


def should_exclude_dir(cfg: DepmodConfig, name: str) -> bool:
    """Whether the module walk skips a directory entry of this name (any file type)."""
    return name in (".", "..", "build", "source") or name in cfg.excludes


@dataclass(frozen=True, slots=True)
class FoundModule:
    """A module file met by the walk.

    `path` is the path as walked (directory + "/" + name); `abspath` is what libkmod stores
    (`path` made absolute against the working directory); `baselen` is where the file name
    starts in `path`; `modnamelen` is the length of the normalised module name.
    """

    path: str
    abspath: str
    baselen: int
    modname: str


def new_is_not_better(cfg: DepmodConfig, dirname: str, old: FoundModule,
                      new: FoundModule) -> bool:
    """kmod's `depmod_module_is_higher_priority`: True when the module found earlier stays.

    The rules compare the paths cut right after the module name (so `override` and `search`
    entries match `subdir/modname` whatever the extension): an `override` naming either path
    wins; otherwise the later entry of kmod's prepended search list (the earlier config line)
    wins, `external` standing for the external directories and `built-in` for everything
    else; on a tie the module found first stays.
    """
    modnamelen = len(new.modname)
    newpath = new.path
    newlen = new.baselen + modnamelen
    oldpath = old.abspath
    oldlen = old.abspath.rfind("/") + 1 + len(old.modname)
    dlen = len(dirname)
    relnew = reloldv = None
    relnewlen = reloldlen = 0
    if newpath.startswith(dirname):
        relnew = newpath[dlen + 1 :]
        relnewlen = newlen - (dlen + 1)
    if oldpath.startswith(dirname):
        reloldv = oldpath[dlen + 1 :]
        reloldlen = oldlen - (dlen + 1)
    for ov in cfg.overrides:
        if relnew is not None and relnewlen == len(ov) and relnew[:relnewlen] == ov:
            return False
        if reloldv is not None and reloldlen == len(ov) and reloldv[:reloldlen] == ov:
            return True
    bprio = oldprio = newprio = -1
    i = 0
    for se in cfg.searches:
        if se.type is SearchType.BUILTIN:
            bprio = i
        elif se.type is SearchType.EXTERNAL:
            for ext in cfg.externals:
                if _starts_with_dir(newpath, newlen, ext):
                    newprio = i
                if _starts_with_dir(oldpath, oldlen, ext):
                    oldprio = i
                i += 1
        elif relnew is not None and _rel_under(relnew, relnewlen, se.path):
            newprio = i
        elif reloldv is not None and _rel_under(reloldv, reloldlen, se.path):
            oldprio = i
        i += 1
    if newprio < 0:
        newprio = bprio
    if oldprio < 0:
        oldprio = bprio
    return newprio <= oldprio


def _starts_with_dir(path: str, pathlen: int, prefix: str) -> bool:
    return pathlen > len(prefix) and path[len(prefix) : len(prefix) + 1] == "/" and \
        path.startswith(prefix)


def _rel_under(rel: str, rellen: int, subdir: str) -> bool:
    n = len(subdir)
    return rellen > n and rel[n : n + 1] == "/" and rel.startswith(subdir)
