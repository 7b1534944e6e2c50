"""Reading a module directory and the modprobe.d configuration from disk.

The thin edge under `kmodd.core.kmod.index` and `kmodd.core.kmod.config`: map the index files,
list the configuration directories the way libkmod stats and reads them, read the files and
`/proc/cmdline`. Nothing here decides anything.

Every configuration file is read through `kmodd.system.safeopen`: a FIFO, device, directory or
socket named `*.conf` (or given with `-C`), or a file over `CONFIG_FILE_MAX`, is reported
("PATH: is a FIFO, ignoring") and skipped, where kmod would wait for a writer for ever or read
`/dev/zero` until memory runs out. A file that cannot be opened is skipped silently, as kmod
does.
"""

from __future__ import annotations

import errno
import gc
import mmap
import os
import stat
from collections.abc import Mapping, Sequence

from kmodd.core.kmod.binindex import BinIndex
from kmodd.core.kmod.config import (
    Config,
    ConfigFile,
    Diagnostic,
    DirListing,
    build_config,
    order_config_files,
)
from kmodd.core.kmod.index import (
    INDEX_FILES,
    INDEX_SOURCES,
    IndexProblem,
    ModuleIndex,
    RawIndexes,
    open_indexes,
)
from kmodd.system.root import MODPROBE_D_DIRS, Root
from kmodd.system.safeopen import CONFIG_FILE_MAX, Refusal, Refused, read_regular

#: The libkmod message site a configuration file that is not read is reported at.
CONFIG_NOT_READ_SITE = "config_not_read"


#: Opening an index never blocks (a FIFO at its path is not waited on).
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


def map_file(path: str, *, copy: bool = False) -> bytes | None:
    """The file's bytes through a read-only mapping (None if it cannot be opened or is not
    a regular file).

    `copy` reads the bytes instead: a long-lived reader (the daemon) must not keep a
    mapping, because a file truncated in place under it would kill the process with SIGBUS
    at the next lookup; depmod replaces its files by rename, so a copy never goes stale.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size == 0:
            return b""
        if copy:
            with os.fdopen(os.dup(fd), "rb", closefd=True) as f:
                return f.read(st.st_size)
        return mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)  # type: ignore[return-value]
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def open_error(path: str) -> str | None:
    """Why `path` cannot be read as an index (strerror text, or "not a regular file"),
    or None if it can."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        return os.strerror(e.errno or errno.EIO)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
    except OSError as e:
        return os.strerror(e.errno or errno.EIO)
    finally:
        os.close(fd)
    return None


def read_index_files(real_moddir: str, *, copy: bool = False) -> dict[str, bytes | None]:
    """The index files of a module directory by name (None: missing); see `map_file`."""
    return {fname: map_file(f"{real_moddir}/{fname}", copy=copy)
            for fname in INDEX_FILES.values()}


def index_sources(real_moddir: str) -> frozenset[str]:
    """Which of the files depmod builds the builtin indexes from exist (INDEX_SOURCES)."""
    return frozenset(name for name in INDEX_SOURCES.values()
                     if os.path.lexists(f"{real_moddir}/{name}"))


def raw_indexes(moddir: str, real_moddir: str | None = None
                ) -> tuple[RawIndexes, list[IndexProblem]]:
    """Indexes read on demand; `moddir` names them, `real_moddir` (default: the same) is read."""
    bins, problems = open_indexes(moddir, read_index_files(real_moddir or moddir))
    return RawIndexes(moddir, bins), problems


def snapshot_indexes(moddir: str, real_moddir: str | None = None
                     ) -> tuple[ModuleIndex, list[IndexProblem]]:
    """The decoded snapshot of a module directory (see `raw_indexes` for the two paths).

    The cyclic garbage collector is paused while the snapshot is built: the build makes
    some 100,000 small containers, none of them garbage, and the collector would walk them
    again and again (a third of the build time).
    """
    bins, problems = open_indexes(moddir, read_index_files(real_moddir or moddir))
    return decode_indexes(moddir, bins), problems


def decode_indexes(moddir: str, bins: Mapping[str, BinIndex]) -> ModuleIndex:
    """Build the decoded snapshot of opened indexes, with the cyclic GC paused.

    The new objects (some 100,000 tuples and dicts, none in a reference cycle) are then
    moved out of the collector's generations (`gc.freeze`): otherwise the next collections
    would traverse all of them, a pause of several milliseconds in the middle of the first
    events. Frozen objects are still freed by reference counting when a newer snapshot
    replaces this one.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        index = ModuleIndex(moddir, bins)
        gc.freeze()
        return index
    finally:
        if paused:
            gc.enable()


def list_config_path(path: str, shown: str | None = None) -> DirListing:
    """stat + readdir of one configuration path, as libkmod's conf_files_list sees it.

    `shown` is the path as messages name it (the path without a test root's prefix).
    """
    shown = path if shown is None else shown
    try:
        st = os.stat(path)
    except OSError:
        return DirListing(shown, "missing")
    if not stat.S_ISDIR(st.st_mode):
        return DirListing(shown, "file")
    try:
        with os.scandir(path) as it:
            entries = []
            for e in it:
                try:
                    is_dir = e.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                entries.append((e.name, is_dir))
    except OSError as e:
        return DirListing(shown, "dir", error=os.strerror(e.errno or errno.EIO))
    return DirListing(shown, "dir", tuple(entries))


def read_file(path: str, cap: int = CONFIG_FILE_MAX) -> bytes | None:
    """A regular file's contents (at most `cap` bytes), or None for anything else."""
    data = read_regular(path, cap)
    return None if isinstance(data, Refused) else data


def read_config_file(path: str, shown: str) -> bytes | Refused:
    """One configuration file (modprobe.d, `-C`, kmodd.conf) through the checks of
    `safeopen`: a regular file of at most `CONFIG_FILE_MAX` bytes, or why not."""
    return read_regular(path, CONFIG_FILE_MAX, shown)


def read_cmdline(root: Root) -> bytes | None:
    return read_file(root.proc("cmdline"))


def _config_contents(path: str, shown: str, diags: list[Diagnostic]) -> bytes | None:
    """A chosen configuration file's bytes; None (and a diagnostic unless it simply cannot be
    opened, on which kmod is silent too) when it is not read."""
    data = read_config_file(path, shown)
    if not isinstance(data, Refused):
        return data
    if data.refusal is not Refusal.OPEN_FAILED:
        diags.append(Diagnostic(data.text, CONFIG_NOT_READ_SITE))
    return None


def load_config(
    root: Root, moddir: str, config_paths: Sequence[str] | None = None,
    real_moddir: str | None = None,
) -> Config:
    """Read modprobe.d (or the `-C` paths) and the kernel command line into a Config.

    `moddir` names the module directory's `modules.softdep` in messages; `real_moddir` is
    where it is read (they differ under a test root).
    """
    if config_paths:
        pairs = [(p, p) for p in config_paths]
    else:
        pairs = [(root.path(p), p) for p in MODPROBE_D_DIRS]
    listings = [list_config_path(real, shown) for real, shown in pairs]
    files, diags = order_config_files(moddir, listings)
    prefix = "" if config_paths or root.is_host else root.prefix.rstrip("/")
    softdep = f"{real_moddir or moddir}/modules.softdep"
    contents: list[tuple[ConfigFile, bytes | None]] = [
        (cf, _config_contents(
            softdep if cf.path == f"{moddir}/modules.softdep" else prefix + cf.path,
            cf.path, diags))
        for cf in files
    ]
    # The refusals follow the listing's problems, before the parse problems of the files.
    return build_config(contents, read_cmdline(root), diags)
