"""Inside a private mount namespace: show kmod a fake root at the host paths, then run commands.

This file runs as a standalone script (`unshare -m python3 _nsdriver.py`), started by
`kmodrun.KmodRunner`; it imports nothing but the standard library. Protocol on stdin/stdout:

* first line: a JSON spec `{"scratch": dir, "masks": [[target, source|null, "dir"|"file"], ...]}`;
  `source` null means the target must not exist for kmod, `"@empty"` an empty file or directory;
* the driver answers `READY\\n` once the mounts are in place (or `ERROR <text>\\n`);
* a line `{"masks": [...], "read_only": bool}` switches to another fake root (same answer);
* one JSON line per batch `{"cases": [{"exe", "argv", "env", "cwd", "timeout"}, ...]}`;
  for each batch it writes one record per case, in order: `>iII` (exit code, stdout length,
  stderr length) followed by the two byte strings.

Nothing is created on the host: a directory that must appear (or vanish) where the host has
none (or has one) is made by mounting a tmpfs over its nearest existing ancestor and binding the
ancestor's other entries back into it. The namespace is private (`unshare -m` defaults to
private propagation), so every mount disappears with this process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import signal
import struct
import sys
import time
from typing import Any, BinaryIO

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
RECORD_HEADER = struct.Struct(">iII")
#: exit code reported when a case runs past its timeout (kmod itself only exits 0 or 1)
RC_TIMEOUT = -1000
#: a mask source meaning "an empty file or directory" (no host file needed)
EMPTY = "@empty"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    rc = _libc.mount(source.encode() if source else None, target.encode(),
                     fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}): "
                           f"{os.strerror(err)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount2({target!r}): {os.strerror(err)}")


class Masker:
    """Rearranges the namespace's view of a few host paths."""

    def __init__(self, scratch: str) -> None:
        # The scratch directory itself becomes a tmpfs: placeholders never touch the host.
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
        self.scratch = scratch
        self.rebuilt: set[str] = set()
        self.binds: list[str] = []
        self.counter = 0

    def _fresh(self, kind: str) -> str:
        self.counter += 1
        path = os.path.join(self.scratch, f"{kind}-{self.counter}")
        os.mkdir(path)
        return path

    def rebuild(self, directory: str, exclude: set[str]) -> None:
        """Replace `directory` by a tmpfs that holds its entries (bound back) minus `exclude`."""
        if directory == "/":
            raise RuntimeError("refusing to rebuild /")
        if directory in self.rebuilt:
            for name in exclude:
                path = os.path.join(directory, name)
                if os.path.lexists(path):
                    if os.path.ismount(path):
                        _umount(path)
                    if os.path.isdir(path) and not os.path.islink(path):
                        os.rmdir(path)
                    else:
                        os.unlink(path)
            return
        orig = self._fresh("orig")
        _mount(directory, orig, None, MS_BIND | MS_REC)
        st = os.stat(directory)
        _mount("tmpfs", directory, "tmpfs", 0, f"mode={st.st_mode & 0o7777:o}")
        for name in sorted(os.listdir(orig)):
            if name in exclude:
                continue
            src = os.path.join(orig, name)
            dst = os.path.join(directory, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif os.path.isdir(src):
                os.mkdir(dst)
                _mount(src, dst, None, MS_BIND | MS_REC)
            else:
                with open(dst, "wb"):
                    pass
                _mount(src, dst, None, MS_BIND | MS_REC)
        self.rebuilt.add(directory)

    def make_absent(self, target: str) -> None:
        parent = os.path.realpath(os.path.dirname(target))
        name = os.path.basename(target)
        if os.path.lexists(os.path.join(parent, name)):
            self.rebuild(parent, {name})

    def make_present(self, target: str, kind: str) -> str:
        """Make sure a mount point of the right kind exists at `target`; return its real path."""
        missing: list[str] = []
        existing = target
        while not os.path.lexists(existing):
            missing.append(os.path.basename(existing))
            existing = os.path.dirname(existing)
        if not missing:
            real = os.path.realpath(target)
            if os.path.isdir(real) == (kind == "dir"):
                return real
            parent = os.path.dirname(real)
            self.rebuild(parent, {os.path.basename(real)})
            missing, existing = [os.path.basename(real)], parent
        base = os.path.realpath(existing)
        self.rebuild(base, set())
        for name in reversed(missing[1:]):
            base = os.path.join(base, name)
            os.mkdir(base)
        real = os.path.join(base, missing[0])
        if kind == "dir":
            os.mkdir(real)
        else:
            with open(real, "wb"):
                pass
        return real

    def empty_source(self, kind: str) -> str:
        path = self._fresh("empty")
        if kind == "dir":
            return path
        path = os.path.join(path, "file")
        with open(path, "wb"):
            pass
        return path

    def apply(self, masks: list[tuple[str, str | None, str]], read_only: bool = True) -> None:
        """Show a (new) fake root: undo the previous view's binds, then lay out this one."""
        for real in reversed(self.binds):
            _umount(real)
        self.binds = []
        # Structure first (absent targets, then mount points), then the bind mounts, so
        # that a later tmpfs rebuild can never hide an earlier bind.
        for target, source, _kind in masks:
            if source is None:
                self.make_absent(target)
        binds = []
        for target, source, kind in masks:
            if source == EMPTY:
                source = self.empty_source(kind)
            if source is not None:
                binds.append((source, self.make_present(target, kind)))
        for source, real in binds:
            _mount(source, real, None, MS_BIND | MS_REC)
            self.binds.append(real)
            if read_only:
                # kmod must never write into a fake root (nor through it to the host).
                _mount("none", real, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


class Batch:
    """Runs cases with at most `workers` children at a time; output goes to memfds.

    posix_spawn + memfd + pidfd keeps the per-case cost close to kmod's own start-up time
    (a few ms, mostly dynamic linking), which matters for tens of thousands of cases.
    """

    def __init__(self, cases: list[dict[str, object]], workers: int) -> None:
        self.cases = cases
        self.workers = workers
        self.results: list[tuple[int, bytes, bytes] | None] = [None] * len(cases)
        self.poller = select.poll()
        # pidfd -> (case index, pid, stdout memfd, stderr memfd, deadline)
        self.running: dict[int, tuple[int, int, int, int, float]] = {}

    def run(self) -> list[tuple[int, bytes, bytes]]:
        todo = iter(range(len(self.cases)))
        exhausted = False
        while True:
            while not exhausted and len(self.running) < self.workers:
                i = next(todo, None)
                if i is None:
                    exhausted = True
                else:
                    self._start(i)
            if not self.running:
                break
            deadline = min(r[4] for r in self.running.values())
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000) + 1)
            events = self.poller.poll(wait_ms)
            for pidfd, _ in events:
                self._finish(pidfd, timed_out=False)
            now = time.monotonic()
            for pidfd, entry in list(self.running.items()):
                if entry[4] <= now:
                    os.kill(entry[1], signal.SIGKILL)
                    self._finish(pidfd, timed_out=True)
        return [r for r in self.results if r is not None]

    def _start(self, i: int) -> None:
        case = self.cases[i]
        argv = [str(a) for a in case["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in case["env"].items()}  # type: ignore[attr-defined]
        timeout = float(case.get("timeout") or 60)  # type: ignore[arg-type]
        out = os.memfd_create("stdout", os.MFD_CLOEXEC)
        err = os.memfd_create("stderr", os.MFD_CLOEXEC)
        cwd = case.get("cwd")
        if cwd:
            # posix_spawn cannot chdir; the rare case with a working directory forks.
            pid = os.fork()
            if pid == 0:  # child
                try:
                    os.chdir(str(cwd))
                    fd = os.open("/dev/null", os.O_RDONLY)
                    os.dup2(fd, 0)
                    os.dup2(out, 1)
                    os.dup2(err, 2)
                    os.execve(str(case["exe"]), argv, env)
                finally:
                    os._exit(127)
        else:
            pid = os.posix_spawn(str(case["exe"]), argv, env, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, err, 2),
            ])
        pidfd = os.pidfd_open(pid)
        self.poller.register(pidfd, select.POLLIN)
        self.running[pidfd] = (i, pid, out, err, time.monotonic() + timeout)

    def _finish(self, pidfd: int, *, timed_out: bool) -> None:
        i, pid, out, err, _ = self.running.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        rc = RC_TIMEOUT if timed_out else os.waitstatus_to_exitcode(status)
        self.results[i] = (rc, _drain(out), _drain(err))


def _drain(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    os.close(fd)
    return data


def _reply_view(out: BinaryIO, masker: Masker, request: dict[str, Any]) -> bool:
    try:
        masker.apply([(t, src, k) for t, src, k in request["masks"]],
                     bool(request.get("read_only", True)))
    except Exception as exc:  # report, do not trace back: the parent shows the message
        out.write(f"ERROR {exc}\n".encode())
        out.flush()
        return False
    out.write(b"READY\n")
    out.flush()
    return True


def main() -> int:
    stdin = sys.stdin.buffer
    out = sys.stdout.buffer
    spec = json.loads(stdin.readline())
    workers = int(spec.get("workers") or (os.cpu_count() or 1) + 1)
    try:
        masker = Masker(spec["scratch"])
    except Exception as exc:
        out.write(f"ERROR {exc}\n".encode())
        out.flush()
        return 1
    if not _reply_view(out, masker, spec):
        return 1
    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "masks" in request:  # switch to another fake root
            if not _reply_view(out, masker, request):
                return 1
            continue
        for rc, so, se in Batch(request["cases"], workers).run():
            out.write(RECORD_HEADER.pack(rc, len(so), len(se)))
            out.write(so)
            out.write(se)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
