"""The service manager's side channels: sd_notify messages, the watchdog and socket activation.

Implemented with the stdlib against systemd's documented protocol (`sd_notify(3)`,
`sd_listen_fds(3)`, `sd_watchdog_enabled(3)`): a datagram of `KEY=VALUE` lines to the
`AF_UNIX` socket named by `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace), and
inherited descriptors from fd 3 on, described by `$LISTEN_FDS`, `$LISTEN_PID` and
`$LISTEN_FDNAMES`. Without `$NOTIFY_SOCKET` every notification is a quiet no-op, as in libsystemd.
Without socket activation the daemon binds its control socket itself (`bind_control`): never
over anything but a stale socket, and it removes at stop only the file it made.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass

#: The first descriptor that socket activation passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: Send a watchdog ping this many times per `WATCHDOG_USEC` (systemd recommends at least 2).
WATCHDOG_PINGS_PER_INTERVAL = 2


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """Sends state changes to the service manager; does nothing when there is none."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        name = environ.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _address(name) if name[:1] in ("/", "@") else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=VALUE` lines (keyword names are upper-cased). False if nobody listens."""
        if self._address is None:
            return False
        text = "".join(f"{key.upper()}={value}\n" for key, value in fields.items())
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(text.encode(), self._address)
        except OSError:
            # The manager went away (or never listened): notifications are advisory.
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def reloading(self) -> bool:
        """`RELOADING=1` with the `MONOTONIC_USEC` that Type=notify-reload requires."""
        return self.notify(reloading=1, monotonic_usec=time.monotonic_ns() // 1000)

    def stopping(self) -> bool:
        return self.notify(stopping=1)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between watchdog pings, or None when the manager expects none.

    `$WATCHDOG_USEC` is the timeout; `$WATCHDOG_PID`, when set, must be our pid. The ping
    period is the timeout divided by WATCHDOG_PINGS_PER_INTERVAL.
    """
    usec_text = environ.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) == 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec_text) / 1_000_000 / WATCHDOG_PINGS_PER_INTERVAL


@dataclass(frozen=True, slots=True)
class ListenFd:
    """A socket passed by the service manager: its descriptor and `FileDescriptorName=`."""

    fd: int
    name: str


def listen_fds(environ: Mapping[str, str], pid: int | None = None) -> tuple[ListenFd, ...]:
    """The sockets passed to this process, or () when none were (or were meant for another).

    Names default to "unknown" as in libsystemd. The descriptors are marked close-on-exec.
    """
    if environ.get("LISTEN_PID") != str(os.getpid() if pid is None else pid):
        return ()
    count_text = environ.get("LISTEN_FDS", "")
    if not count_text.isdigit():
        return ()
    count = int(count_text)
    names = environ.get("LISTEN_FDNAMES", "").split(":") if environ.get("LISTEN_FDNAMES") else []
    out = []
    for i in range(count):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue  # announced but not open: nothing was passed there
        out.append(ListenFd(fd, names[i] if i < len(names) and names[i] else "unknown"))
    return tuple(out)


#: The variables socket activation sets; the caller removes them so children do not inherit.
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


#: Seconds a probe of an existing socket at the control socket's path may take to connect.
PROBE_TIMEOUT = 1.0


class PathTaken(Exception):
    """Something other than a stale socket is at the control socket's path (the message
    says what); it is left alone."""


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """A listening socket the daemon bound, and the identity of the file it made, so that
    it removes that file only (`unlink_if_ours`)."""

    sock: socket.socket
    path: str
    device: int
    inode: int
    changed_ns: int  # st_ctime_ns: a file made later in a reused inode differs here


def _identity(info: os.stat_result) -> tuple[int, int, int, bool]:
    return info.st_dev, info.st_ino, info.st_ctime_ns, stat.S_ISSOCK(info.st_mode)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "file of unknown type"


def _clear_stale(path: str) -> None:
    """Remove `path` if it is a socket nobody listens on; raise PathTaken for anything else.

    Only the daemon holding the instance lock calls this (`system.instance`), so a stale
    socket cannot be a live daemon's that is about to listen.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise PathTaken(f"{path} exists and is a {_kind(info.st_mode)}, not a socket; "
                        "not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # stale: left by a daemon that is gone
    except FileNotFoundError:
        return  # removed meanwhile
    except OSError as e:  # EAGAIN (a full backlog), a timeout: someone is there
        raise PathTaken(f"{path} is a socket in use ({e.strerror or e}); not removing it") \
            from None
    else:
        raise PathTaken(f"another process listens on {path}; not removing it")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_listener(path: str, mode: int = 0o666) -> socket.socket:
    """A listening AF_UNIX stream socket at `path` (see `bind_control`)."""
    return bind_control(path, mode).sock


def bind_control(path: str, mode: int = 0o666) -> BoundSocket:
    """A listening AF_UNIX stream socket at `path`, and the identity of its file.

    What is at the path already: nothing, bind; a socket nobody listens on (connecting is
    refused), stale, replaced; a socket someone listens on, or anything that is not a socket
    (a regular file, directory, symbolic link, FIFO), PathTaken, and it is left alone.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        # Reading is open to every user; changing methods check the caller's credentials.
        os.chmod(path, mode)
        info = os.lstat(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return BoundSocket(sock, path, info.st_dev, info.st_ino, info.st_ctime_ns)


def unlink_if_ours(bound: BoundSocket) -> bool:
    """Remove the socket file `bound` made, unless something else is at its path by now
    (another daemon's socket, anything an administrator put there). True if removed."""
    try:
        info = os.lstat(bound.path)
    except OSError:
        return False
    if _identity(info) != (bound.device, bound.inode, bound.changed_ns, True):
        return False
    try:
        os.unlink(bound.path)
    except OSError:
        return False
    return True
