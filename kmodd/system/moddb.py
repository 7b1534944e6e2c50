"""Reading a module directory and the modprobe.d configuration from disk.

The thin edge under `kmodd.core.index` and `kmodd.core.config`: map the index files,
list the configuration directories the way libkmod stats and reads them, read the files and
`/proc/cmdline`. Nothing here decides anything.
"""

from __future__ import annotations

import errno
import gc
import mmap
import os
import stat
from collections.abc import Mapping, Sequence

from kmodd.core.binindex import BinIndex
from kmodd.core.config import Config, ConfigFile, DirListing, build_config, order_config_files
from kmodd.core.index import INDEX_FILES, IndexProblem, ModuleIndex, RawIndexes, open_indexes
from kmodd.system.root import MODPROBE_D_DIRS, Root


def map_file(path: str) -> bytes | None:
    """The file's bytes through a read-only mapping (None if it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)  # type: ignore[return-value]
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def open_error(path: str) -> str | None:
    """Why `path` cannot be opened for reading (strerror text), or None if it can."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        return os.strerror(e.errno or errno.EIO)
    return None


def read_index_files(real_moddir: str) -> dict[str, bytes | None]:
    return {fname: map_file(f"{real_moddir}/{fname}") for fname in INDEX_FILES.values()}


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


def read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def read_cmdline(root: Root) -> bytes | None:
    return read_file(root.proc("cmdline"))


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
        (cf, read_file(softdep if cf.path == f"{moddir}/modules.softdep" else prefix + cf.path))
        for cf in files
    ]
    return build_config(contents, read_cmdline(root), diags)
