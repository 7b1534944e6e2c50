"""The kernel's uevent broadcast: a NETLINK_KOBJECT_UEVENT socket that accepts only the kernel.

Why a small stdlib adapter and not pyroute2's `AsyncUeventSocket`: pyroute2 receives through
an asyncio datagram endpoint, which hands the protocol `(data, address)` only. The
`SCM_CREDENTIALS` control message and the `MSG_TRUNC` flag never reach the caller, its
`bind()` joins every multicast group unless told otherwise, its messages are queued without
bound, and it parses into dicts that `core.autoload.uevent` would parse again. Every check this edge
exists for needs `recvmsg`, which is four lines of stdlib.

Each datagram passes these checks, in this order, and the first that fails names the drop
(udev's `device_monitor_receive_device`, Android's `uevent_kernel_recv`):

1. not truncated (`MSG_TRUNC`: larger than `core.autoload.uevent.MAX_UEVENT_BYTES`);
2. sent by the kernel: port id 0 (every userspace socket has a non-zero port id);
3. sent to multicast group 1 (a unicast to our port id is always forged);
4. carries `SCM_CREDENTIALS` and 5. the credentials say uid 0;
6. parses as a kernel uevent (`core.autoload.uevent.parse_uevent`).

Every drop is counted (`statistics()`) and, when the owner set `on_reject`, told as a
`Rejected` value with the sender's port id and credentials, so the daemon can log it.

When the kernel could not queue a uevent for us it reports `ENOBUFS` once; this socket turns
that into an `EventsLost` value in the stream so the daemon resynchronises from sysfs.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kmodd.core.autoload.uevent import (
    MAX_UEVENT_BYTES,
    Uevent,
    UeventDefect,
    UeventError,
    parse_uevent,
)

NETLINK_KOBJECT_UEVENT = 15
#: The kernel's multicast group; group 2 carries udevd's processed rebroadcasts.
KERNEL_GROUP = 1
#: Not exported by Python's socket module (asm-generic/socket.h).
SO_RCVBUFFORCE = 33
_UCRED = struct.Struct("iII")  # pid, uid, gid
#: Datagrams read per wake-up before the event loop gets a turn.
RECEIVE_BATCH = 256
#: `MSG_TRUNC` as a plain int: `int & IntFlag` goes through the enum machinery on every datagram.
_MSG_TRUNC = int(socket.MSG_TRUNC)
#: Default receive buffer, the same as systemd-udevd's (PR #11389).
DEFAULT_RECEIVE_BUFFER = 128 * 1024 * 1024


class DropReason(StrEnum):
    """Why a datagram on the uevent socket was not accepted."""

    TRUNCATED = "truncated"
    SENDER_NOT_KERNEL = "sender-not-kernel"
    NOT_MULTICAST_GROUP_1 = "not-multicast-group-1"
    NO_CREDENTIALS = "no-credentials"
    SENDER_UID_NOT_0 = "sender-uid-not-0"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A datagram that failed a check: why, and who sent it (as far as the kernel says)."""

    reason: DropReason
    port_id: int  # the sender's netlink port id (0: the kernel)
    groups: int  # the multicast groups it was sent to (0: a unicast to us)
    pid: int | None  # from SCM_CREDENTIALS, when present
    uid: int | None


def sender_credentials(
    ancillary: Sequence[tuple[int, int, bytes]],
) -> tuple[int, int] | None:
    """(pid, uid) from a datagram's SCM_CREDENTIALS, or None without them."""
    for level, kind, data in ancillary:
        if (
            level == socket.SOL_SOCKET
            and kind == socket.SCM_CREDENTIALS
            and len(data) >= _UCRED.size
        ):
            pid, uid, _gid = _UCRED.unpack_from(data)
            return pid, uid
    return None


@dataclass(frozen=True, slots=True)
class EventsLost:
    """The kernel dropped uevents meant for us (ENOBUFS): whoever reads must resynchronise."""

    monotonic: float


@dataclass(frozen=True, slots=True)
class IntakeStatistics:
    """Counters of the uevent socket since it was opened."""

    received: int
    accepted: int
    dropped: Mapping[DropReason, int]
    malformed: Mapping[UeventDefect, int]
    overruns: int
    receive_buffer: int
    receive_buffer_forced: bool


#: Where a source hands what it received: one batch, in the order the kernel sent it.
Deliver = Callable[[Sequence[Uevent | EventsLost]], None]
#: Told once when the source cannot go on (it has detached itself).
Failed = Callable[[BaseException], None]


class UeventSource(Protocol):
    """What the daemon reads uevents from (this socket, or a fake in tests)."""

    def attach(self, deliver: Deliver, failed: Failed) -> None:
        """From now on, call `deliver` in the running event loop with each batch received;
        `failed` with the error if reading breaks down."""
        ...

    def detach(self) -> None:
        """Stop delivering (what the kernel sends meanwhile waits in the socket)."""
        ...

    def statistics(self) -> IntakeStatistics: ...

    def close(self) -> None: ...


def check_sender(
    address: tuple[int, int], flags: int, ancillary: Sequence[tuple[int, int, bytes]]
) -> DropReason | None:
    """The first sender check (1-5 above) that a received datagram fails, or None."""
    if flags & _MSG_TRUNC:
        return DropReason.TRUNCATED
    port_id, groups = address
    if port_id != 0:
        return DropReason.SENDER_NOT_KERNEL
    if groups != KERNEL_GROUP:
        return DropReason.NOT_MULTICAST_GROUP_1
    creds = sender_credentials(ancillary)
    if creds is None:
        return DropReason.NO_CREDENTIALS
    return None if creds[1] == 0 else DropReason.SENDER_UID_NOT_0


class NetlinkUeventSocket:
    """The kernel uevent socket: group 1 only, sender checked, ENOBUFS surfaced.

    Build it with `open_uevent_socket` (or `adopt_uevent_socket` for a socket-activated fd).
    """

    def __init__(self, sock: socket.socket, receive_buffer: int, forced: bool) -> None:
        self._sock = sock
        self._receive_buffer = receive_buffer
        self._forced = forced
        self._received = 0
        self._accepted = 0
        self._overruns = 0
        self._dropped: Counter[DropReason] = Counter()
        self._malformed: Counter[UeventDefect] = Counter()
        self._cmsg_space = socket.CMSG_SPACE(_UCRED.size)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Told of every rejected datagram, in the event loop, as it is read.
        self.on_reject: Callable[[Rejected], None] | None = None

    @property
    def port_id(self) -> int:
        """Our netlink port id (what a forger would unicast to)."""
        port_id: int = self._sock.getsockname()[0]
        return port_id

    def fileno(self) -> int:
        return self._sock.fileno()

    def statistics(self) -> IntakeStatistics:
        return IntakeStatistics(
            received=self._received,
            accepted=self._accepted,
            dropped=dict(self._dropped),
            malformed=dict(self._malformed),
            overruns=self._overruns,
            receive_buffer=self._receive_buffer,
            receive_buffer_forced=self._forced,
        )

    def receive_nowait(self, limit: int = RECEIVE_BATCH) -> list[Uevent | EventsLost]:
        """Read up to `limit` datagrams without blocking; return the accepted ones in order."""
        out: list[Uevent | EventsLost] = []
        recvmsg = self._sock.recvmsg
        for _ in range(limit):
            try:
                data, ancillary, flags, address = recvmsg(MAX_UEVENT_BYTES, self._cmsg_space)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._overruns += 1
                    out.append(EventsLost(time.monotonic()))
                    continue
                raise
            self._received += 1
            reason = check_sender(address, flags, ancillary)
            if reason is None:
                event = parse_uevent(data)
                if not isinstance(event, UeventError):
                    self._accepted += 1
                    out.append(event)
                    continue
                reason = DropReason.MALFORMED
                self._malformed[event.defect] += 1
            self._dropped[reason] += 1
            if self.on_reject is not None:
                creds = sender_credentials(ancillary)
                self.on_reject(Rejected(reason, address[0], address[1],
                                        creds[0] if creds else None,
                                        creds[1] if creds else None))
        return out

    def attach(self, deliver: Deliver, failed: Failed) -> None:
        """Deliver each batch from the running loop as the socket becomes readable.

        The socket stays registered with the loop: a uevent costs one wake-up, its
        `recvmsg` calls and the checks, with no registration or future per event. An error
        reading the socket (or raised by `deliver`) detaches it and goes to `failed`.
        """
        loop = asyncio.get_running_loop()
        self.detach()

        def readable() -> None:
            try:
                batch = self.receive_nowait()
                if batch:
                    deliver(batch)
            except Exception as e:  # handed to the owner, not lost
                self.detach()
                failed(e)

        loop.add_reader(self._sock.fileno(), readable)
        self._loop = loop

    def detach(self) -> None:
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    def close(self) -> None:
        self.detach()
        self._sock.close()

    def __enter__(self) -> NetlinkUeventSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _set_receive_buffer(sock: socket.socket, size: int) -> tuple[int, bool]:
    """SO_RCVBUFFORCE (needs CAP_NET_ADMIN; ignores rmem_max), else SO_RCVBUF (capped)."""
    forced = True
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        forced = False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # The kernel doubles the request for its bookkeeping; report what it really granted.
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), forced


def open_uevent_socket(receive_buffer: int = DEFAULT_RECEIVE_BUFFER) -> NetlinkUeventSocket:
    """Open, size and bind a kernel uevent socket to group 1 with SO_PASSCRED on."""
    sock = socket.socket(
        socket.AF_NETLINK,
        socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        NETLINK_KOBJECT_UEVENT,
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        size, forced = _set_receive_buffer(sock, receive_buffer)
        sock.bind((0, KERNEL_GROUP))
    except BaseException:
        sock.close()
        raise
    return NetlinkUeventSocket(sock, size, forced)


class NotAUeventSocket(ValueError):
    """A passed file descriptor is not a NETLINK_KOBJECT_UEVENT socket bound to group 1."""


def adopt_uevent_socket(
    fd: int, receive_buffer: int = DEFAULT_RECEIVE_BUFFER
) -> NetlinkUeventSocket:
    """Take over a socket-activated uevent socket (`ListenNetlink=kobject-uevent 1`).

    The buffer is only ever grown: a unit's `ReceiveBuffer=` that is larger wins.
    """
    sock = socket.socket(fileno=fd)
    try:
        domain = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        protocol = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        if domain != socket.AF_NETLINK or protocol != NETLINK_KOBJECT_UEVENT:
            raise NotAUeventSocket(f"fd {fd} is not a NETLINK_KOBJECT_UEVENT socket")
        groups = sock.getsockname()[1]
        if groups != KERNEL_GROUP:
            raise NotAUeventSocket(f"fd {fd} is bound to groups {groups:#x}, not {KERNEL_GROUP}")
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        forced = False
        if size < receive_buffer:
            size, forced = _set_receive_buffer(sock, receive_buffer)
    except BaseException:
        sock.detach()
        raise
    return NetlinkUeventSocket(sock, size, forced)
