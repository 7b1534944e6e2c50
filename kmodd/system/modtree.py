"""Module trees on disk: walk them, read the files (in worker processes), write the indexes.

Everything depmod touches goes through here: the depmod.d directories, the module
directory walk (readdir order, following symlinks, as kmod's `depmod_modules_search_dir`),
reading and decompressing every module file (in parallel: one worker process per core,
each returning only the small `ModuleFacts`), the `-A` freshness check, and writing each
output to a temporary file renamed into place (`depmod_output`).

Paths are "logical" Latin-1 strings, as the user and kmod's messages see them; `HostPaths`
maps them through a `Root` onto bytes for the system calls, so a test can move the whole
system under a prefix the way kmod's testsuite does with its path trap.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kmodd.core.depmod.build import DepmodModule, FactsOptions, ModuleFacts, module_facts
from kmodd.core.depmod.config import (
    ConfigCandidate,
    DepmodConfig,
    FoundModule,
    Message,
    config_path_candidate,
    new_is_not_better,
    should_exclude_dir,
)
from kmodd.core.kmod.normalize import modname_normalize
from kmodd.core.modfile.compression import EXTENSIONS
from kmodd.core.priority import Priority
from kmodd.system.codecs import unzstd
from kmodd.system.root import Root

#: File names the walk takes as modules (kmod's path_ends_with_kmod_ext).
MODULE_SUFFIXES = tuple(ext for ext, _ in EXTENSIONS)
#: Below this many modules, parsing in-process beats starting workers.
PARALLEL_MIN_MODULES = 64
#: Worker processes at most (one per core is what pays).
MAX_WORKERS = 8
T = TypeVar("T")
R = TypeVar("R")
OUTPUT_FILE_MODE = 0o644
#: The open() flags kmod names in its message when a temporary file cannot be created.
_KMOD_TMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY
OUTPUT_DIR_MODE = 0o755


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Maps logical paths (Latin-1 text) onto host paths (bytes) under a Root."""

    root: Root = field(default_factory=Root)

    def host(self, logical: str) -> bytes:
        raw = logical.encode("latin-1")
        if raw.startswith(b"/") and not self.root.is_host:
            return os.fsencode(self.root.prefix.rstrip("/")) + raw
        return raw


def logical(arg: str) -> str:
    """A command-line or environment string as a logical path (its bytes, as Latin-1)."""
    return os.fsencode(arg).decode("latin-1")


def read_file(paths: HostPaths, path: str) -> tuple[bytes | None, int]:
    """The contents of a file, or (None, errno)."""
    try:
        with open(paths.host(path), "rb") as f:
            return f.read(), 0
    except OSError as exc:
        return None, exc.errno or 0


def stat_errno(paths: HostPaths, path: str) -> int:
    """0 when the file exists (stat() succeeds), else the errno."""
    try:
        os.stat(paths.host(path))
    except OSError as exc:
        return exc.errno or 0
    return 0


# -- configuration --------------------------------------------------------------------


def list_config(paths: HostPaths, config_paths: Sequence[str]) -> list[ConfigCandidate]:
    """The candidates kmod's `cfg_files_list` offers for each config path, in order."""
    out: list[ConfigCandidate] = []
    for cpath in config_paths:
        host = paths.host(cpath)
        try:
            st = os.stat(host)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            out.append(config_path_candidate(cpath))
            continue
        try:
            with os.scandir(host) as it:
                for entry in it:
                    name = entry.name.decode("latin-1")
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    out.append(ConfigCandidate(cpath, name, is_dir))
        except OSError:
            continue
    return out


# -- walking module trees ---------------------------------------------------------------


@dataclass(slots=True)
class ModuleSearch:
    """The module files kept so far, by name (`depmod->modules_by_name`)."""

    cfg: DepmodConfig
    dirname: str
    by_name: dict[str, FoundModule] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)

    def offer(self, found: FoundModule) -> None:
        """`depmod_modules_search_file` after the extension check."""
        old = self.by_name.get(found.modname)
        if old is not None and new_is_not_better(self.cfg, self.dirname, old, found):
            return
        self.by_name[found.modname] = found


def search_modules(paths: HostPaths, search: ModuleSearch, top: str) -> int:
    """Walk one tree (`depmod_modules_search_path`); 0, or the errno opening it failed."""
    try:
        it = os.scandir(paths.host(top))
    except OSError as exc:
        err = exc.errno or 0
        search.messages.append(Message(
            Priority.ERR, f"could not open directory {top}: {os.strerror(err)}\n"))
        return err
    files: list[tuple[str, int]] = []
    with it:
        _walk(paths, it, top + "/", search, files)
    cwd = ""
    for path, baselen in files:
        name = path[baselen:]
        if not name.endswith(MODULE_SUFFIXES) or name in MODULE_SUFFIXES:
            continue
        modname = modname_normalize(name)
        if path.startswith("/"):
            abspath = path
        else:
            cwd = cwd or logical(os.getcwd())
            abspath = f"{cwd}/{path}"
        search.offer(FoundModule(path, abspath, baselen, modname))
    return 0


def _walk(paths: HostPaths, it: Iterator[os.DirEntry[bytes]], base: str,
          search: ModuleSearch, files: list[tuple[str, int]]) -> None:
    """Collect (path, where its name starts) of each regular file, in readdir order,
    entering directories (symlinks followed) as soon as they are met."""
    for entry in it:
        name = entry.name.decode("latin-1")
        if should_exclude_dir(search.cfg, name):
            continue
        path = base + name
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError as exc:
            search.messages.append(Message(
                Priority.ERR, f"fstatat({base[:-1]}, {name}): {os.strerror(exc.errno or 0)}\n"))
            continue
        if is_dir:
            try:
                sub = os.scandir(paths.host(path))
            except OSError as exc:
                search.messages.append(Message(
                    Priority.ERR, f"openat({base[:-1]}, {name}, O_RDONLY): "
                                 f"{os.strerror(exc.errno or 0)}\n"))
                continue
            with sub:
                _walk(paths, sub, path + "/", search, files)
        elif is_file:
            files.append((path, len(base)))
        else:
            try:
                mode = os.stat(paths.host(path)).st_mode
            except OSError as exc:
                search.messages.append(Message(
                    Priority.ERR,
                    f"fstatat({base[:-1]}, {name}): {os.strerror(exc.errno or 0)}\n"))
                continue
            search.messages.append(Message(
                Priority.ERR, f"unsupported file type {path}: {stat.S_IFMT(mode):o}\n"))


def modules_up_to_date(paths: HostPaths, dirname: str) -> tuple[int, list[Message]]:
    """kmod's `depfile_up_to_date` for -A: 1 when no module file is newer (whole seconds)
    than modules.dep, 0 when one is, negative when the check failed."""
    messages: list[Message] = []
    host = paths.host(dirname)
    try:
        os.listdir(host)
    except OSError as exc:
        messages.append(Message(Priority.ERR, f"could not open directory {dirname}: "
                                             f"{os.strerror(exc.errno or 0)}\n"))
        return -1, messages
    try:
        dep_mtime = int(os.stat(host + b"/modules.dep").st_mtime)
    except OSError as exc:
        messages.append(Message(Priority.ERR, f"could not fstatat({dirname}, modules.dep): "
                                             f"{os.strerror(exc.errno or 0)}\n"))
        return -1, messages
    return _up_to_date(host, dep_mtime, messages), messages


def _up_to_date(host: bytes, mtime: int, messages: list[Message]) -> int:
    try:
        entries = list(os.scandir(host))
    except OSError:
        return 1
    for entry in entries:
        name = entry.name
        if name in (b".", b"..", b"build", b"source"):
            continue
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            messages.append(Message(Priority.ERR, f"fstatat({host.decode('latin-1')}, "
                                                 f"{name.decode('latin-1')}): "
                                                 f"{os.strerror(exc.errno or 0)}\n"))
            continue
        if stat.S_ISDIR(st.st_mode):
            if _up_to_date(entry.path, mtime, messages) == 0:
                return 0
        elif stat.S_ISREG(st.st_mode):
            text = name.decode("latin-1")
            if text.endswith(MODULE_SUFFIXES) and text not in MODULE_SUFFIXES \
                    and int(st.st_mtime) > mtime:
                return 0
    return 1


# -- reading modules, in parallel -------------------------------------------------------


def _facts_job(job: tuple[str, bytes, FactsOptions]) -> ModuleFacts:
    path, host, options = job
    try:
        fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return module_facts(None, path, options, exc.errno or 0)
    try:
        # A mapping: only the pages of the sections depmod reads are touched.
        data = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    except ValueError:  # an empty file cannot be mapped
        return module_facts(b"", path, options, zstd=unzstd)
    except OSError as exc:
        return module_facts(None, path, options, exc.errno or 0)
    finally:
        os.close(fd)
    try:
        return module_facts(data, path, options, zstd=unzstd)
    finally:
        data.close()


class Forked(Generic[R]):
    """A computation running in a forked child; `result()` waits for its pickled value.

    If the child cannot be started or dies, the computation runs here instead, so the
    caller always gets its value.
    """

    def __init__(self, compute: Callable[[], R]) -> None:
        self._compute = compute
        self._pid = 0
        self._fd = -1
        try:
            rfd, wfd = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            os.close(rfd)
            os.close(wfd)
            return
        if pid == 0:  # the child: compute, send, leave without running any cleanup
            status = 1
            try:
                os.close(rfd)
                payload = pickle.dumps(compute(), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(wfd, "wb") as out:
                    out.write(payload)
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        self._pid, self._fd = pid, rfd

    def result(self) -> R:
        if self._pid == 0:
            return self._compute()
        with os.fdopen(self._fd, "rb") as f:
            payload = f.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        if status != 0 or not payload:
            return self._compute()
        value: R = pickle.loads(payload)
        return value

    def cancel(self) -> None:
        """Stop the child and forget its result."""
        if self._pid:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
            os.close(self._fd)
            with contextlib.suppress(OSError):
                os.waitpid(self._pid, 0)
            self._pid = 0


def usable_cores() -> int:
    """Cores this process may run on (what parallel work is sized to)."""
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


def fork_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """[fn(x) for x in items], shared among `workers` processes: this one takes items
    0, k, 2k...; forked children take the others (interleaved, so that the shares stay
    even however the sizes of neighbouring items vary)."""
    if workers <= 1 or len(items) < PARALLEL_MIN_MODULES:
        return [fn(x) for x in items]
    children = [Forked(_share(fn, items, w, workers)) for w in range(1, workers)]
    results: list[R | None] = [None] * len(items)
    results[0::workers] = [fn(x) for x in items[0::workers]]
    for w, child in enumerate(children, 1):
        results[w::workers] = child.result()
    return results  # type: ignore[return-value]


def _share(fn: Callable[[T], R], items: Sequence[T], w: int,
           workers: int) -> Callable[[], list[R]]:
    return lambda: [fn(x) for x in items[w::workers]]


def _facts_row(job: tuple[str, bytes, FactsOptions]) -> tuple[object, ...]:
    # Plain tuples cross the process boundary at half the pickling cost of dataclasses.
    f = _facts_job(job)
    return (f.aliases, f.softdeps, f.exports, f.export_crcs, f.needs, f.need_crcs,
            f.need_weak, f.dotted, f.messages)


def collect_facts(paths: HostPaths, modules: Sequence[DepmodModule], options: FactsOptions,
                  workers: int | None = None) -> list[ModuleFacts]:
    """Read every module (in the given order) and extract what depmod needs from it.

    The reading, decompressing and ELF decoding is shared among processes (one per usable
    core by default); only the small facts travel back.
    """
    jobs = [(m.path, paths.host(m.path), options) for m in modules]
    rows = fork_map(_facts_row, jobs, usable_cores() if workers is None else workers)
    return [ModuleFacts(*row) for row in rows]  # type: ignore[arg-type]


# -- writing ----------------------------------------------------------------------------


def make_output_dir(paths: HostPaths, dirname: str) -> int:
    """`mkdir -p` for -o (kmod's mkdir_p); 0 or the errno."""
    try:
        os.makedirs(paths.host(dirname), mode=OUTPUT_DIR_MODE, exist_ok=True)
    except OSError as exc:
        return exc.errno or 0
    return 0


class OutputWriter:
    """Writes output files the way kmod's `depmod_output` does, one at a time: each to
    `<name>.<pid>.<usec>.<sec>`, then renamed into place. A temporary file that cannot be
    created is reported and skipped; a failed rename is fatal; a failed write stops."""

    def __init__(self, paths: HostPaths, dirname: str) -> None:
        self.dirname = dirname
        self.host_dir = paths.host(dirname)
        now = time.time()
        sec = int(now)
        self.stamp = f"{os.getpid()}.{int((now - sec) * 1_000_000)}.{sec}"
        self.stopped = False

    def write(self, name: str, data: bytes) -> list[Message]:
        """Write one file; the messages kmod would log. Sets `stopped` when kmod stops."""
        tmp = f"{name}.{self.stamp}"
        tmp_host = self.host_dir + b"/" + tmp.encode("latin-1")
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
        try:
            fd = os.open(tmp_host, flags, OUTPUT_FILE_MODE)
        except OSError as exc:
            return [Message(Priority.ERR,
                            f"openat({self.dirname}, {tmp}, {_KMOD_TMP_FLAGS:o}, "
                            f"{OUTPUT_FILE_MODE:o}): {os.strerror(exc.errno or 0)}\n")]
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_host)
            self.stopped = True
            return [Message(Priority.ERR, f"Could not create index '{name}'. Output is "
                                         f"truncated: {os.strerror(exc.errno or 0)}\n")]
        try:
            os.rename(tmp_host, self.host_dir + b"/" + name.encode("latin-1"))
        except OSError as exc:
            self.stopped = True
            return [Message(Priority.CRIT, f"renameat({self.dirname}, {tmp}, {self.dirname}, "
                                         f"{name}): {os.strerror(exc.errno or 0)}\n")]
        return []
