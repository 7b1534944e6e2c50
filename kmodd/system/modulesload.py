"""Reading the static lists of modules to load at boot (modules-load.d, `modules_load=`, Debian's
/etc/modules) from a root; the rules are `core.autoload.modulesload`'s.

Every file goes through `safeopen`'s checks (a regular file of bounded size). A directory that
does not exist is normal; one that cannot be listed, or a file that cannot be read, is said
(`Lists.problems`, "PATH: why, ignoring") and skipped, as systemd-modules-load skips it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from kmodd.core.autoload.modulesload import (
    MODULES_LOAD_DIRS,
    Choice,
    Entry,
    ModuleToLoad,
    choose_files,
    collect,
)
from kmodd.system.moddb import read_cmdline, read_config_file
from kmodd.system.root import Root

_DEV_NULL = "/dev/null"


@dataclass(frozen=True, slots=True)
class Lists:
    """What the lists ask for, which files were chosen, and what could not be read."""

    modules: tuple[ModuleToLoad, ...]
    choice: Choice
    problems: tuple[str, ...]


def _unrooted(root: Root, path: str) -> str:
    """`path` (a real path under the root) as the system inside the root names it."""
    if root.is_host:
        return path
    prefix = root.prefix.rstrip("/")
    if path == prefix:
        return "/"
    return path[len(prefix):] if path.startswith(prefix + "/") else path


def _entry(root: Root, directory: str, name: str) -> Entry | None:
    """The entry `name` of `directory` (a system path), or None when it is not a file the
    rules consider (a directory, a dangling link: systemd fails to open it and goes on)."""
    path = root.path(f"{directory}/{name}")
    target: str | None = None
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            real = os.path.realpath(path)
            target = _DEV_NULL if real == _DEV_NULL else _unrooted(root, real)
        st = os.stat(path)
    except OSError:
        return Entry(name, False, target)  # the read says why
    if stat.S_ISCHR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_size == 0):
        return Entry(name, True, target)  # /dev/null, or empty: masks
    if stat.S_ISDIR(st.st_mode):
        return None
    return Entry(name, False, target)


def list_dirs(root: Root, dirs: Sequence[str] = MODULES_LOAD_DIRS
              ) -> tuple[list[tuple[str, list[Entry]]], list[str]]:
    """Each directory (system paths, precedence order) with its `*.conf` entries."""
    listings: list[tuple[str, list[Entry]]] = []
    problems: list[str] = []
    for directory in dirs:
        try:
            names = sorted(os.listdir(root.path(directory)))
        except FileNotFoundError:
            continue
        except OSError as e:
            problems.append(f"{directory}: {e.strerror}, ignoring")
            continue
        entries = [entry for n in names if n.endswith(".conf") and not n.startswith(".")
                   if (entry := _entry(root, directory, n)) is not None]
        listings.append((directory, entries))
    return listings, problems


def read_lists(root: Root, dirs: Sequence[str] = MODULES_LOAD_DIRS) -> Lists:
    """The modules the static lists ask for, in systemd-modules-load's order."""
    listings, problems = list_dirs(root, dirs)
    choice = choose_files(listings)
    texts: dict[str, str | None] = {}
    for f in choice.files:
        if f.masked:
            continue
        data = read_config_file(root.path(f.path), f.path)
        if isinstance(data, bytes):
            texts[f.path] = data.decode("utf-8", "replace")
        else:
            problems.append(data.text)
            texts[f.path] = None
    cmdline = (read_cmdline(root) or b"").decode("utf-8", "replace")
    return Lists(tuple(collect(cmdline, choice, texts)), choice, tuple(problems))
