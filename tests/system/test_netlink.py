"""system.netlink against the real kernel: real uevents in, forged ones out, ENOBUFS surfaced.

Real uevents come from writing `add` to a device's `uevent` file, which makes the kernel
broadcast the device's uevent (with MODALIAS) on group 1. Needs root (as CI runs).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Sequence

import pytest

from kmodd.core.autoload.uevent import Action, Uevent
from kmodd.system.netlink import (
    KERNEL_GROUP,
    NETLINK_KOBJECT_UEVENT,
    DropReason,
    EventsLost,
    NetlinkUeventSocket,
    NotAUeventSocket,
    adopt_uevent_socket,
    check_sender,
    open_uevent_socket,
)
from kmodd.system.root import Root
from kmodd.system.sysfs import scan_devices
from tests.runas import RunAs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes to /sys and binds group 1")

FORGED = (b"add@/devices/forged\0ACTION=add\0DEVPATH=/devices/forged\0SUBSYSTEM=pci\0"
          b"MODALIAS=pci:v00008086d00001234sv*\0SEQNUM=1\0")


def _triggerable() -> list[str]:
    """Devpaths whose `uevent` file makes the kernel broadcast (they have a subsystem)."""
    return [d.devpath for d in scan_devices(Root()).devices if d.subsystem]


def _trigger(devpath: str) -> None:
    with open(f"/sys{devpath}/uevent", "w") as f:
        f.write("add")


def _drain_for(sock: NetlinkUeventSocket, devpath: str, timeout: float = 3.0) -> Uevent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in sock.receive_nowait():
            if isinstance(item, Uevent) and item.devpath == devpath:
                return item
        time.sleep(0.005)
    raise AssertionError(f"no uevent for {devpath} within {timeout}s")


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_socket_is_bound_to_the_kernel_group_only() -> None:
    with open_uevent_socket(1 << 20) as sock:
        assert sock._sock.getsockname()[1] == KERNEL_GROUP
        assert sock._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED) == 1


def test_a_real_uevent_arrives_parsed_with_the_devices_modalias() -> None:
    devpath = _triggerable()[0]
    with open_uevent_socket(1 << 20) as sock:
        _trigger(devpath)
        event = _drain_for(sock, devpath)
    assert event.action is Action.ADD
    assert event.modalias == _read_text(f"/sys{devpath}/modalias")
    assert event.subsystem == os.path.basename(os.readlink(f"/sys{devpath}/subsystem"))
    assert event.env["SYNTH_UUID"] == "0"
    assert 0 < event.seqnum <= int(_read_text("/sys/kernel/uevent_seqnum"))


def test_attached_socket_delivers_from_the_event_loop_when_the_kernel_sends() -> None:
    devpath = _triggerable()[-1]

    async def scenario() -> list[Uevent | EventsLost]:
        loop = asyncio.get_running_loop()
        items: list[Uevent | EventsLost] = []
        errors: list[BaseException] = []
        arrived = asyncio.Event()

        def deliver(batch: Sequence[Uevent | EventsLost]) -> None:
            assert asyncio.get_running_loop() is loop  # called from the loop's own turn
            items.extend(batch)
            if any(isinstance(i, Uevent) and i.devpath == devpath for i in batch):
                arrived.set()

        def failed(error: BaseException) -> None:  # runs in the loop: raising there is lost
            errors.append(error)
            arrived.set()

        with open_uevent_socket(1 << 20) as sock:
            sock.attach(deliver, failed)
            loop.call_later(0.05, _trigger, devpath)
            await asyncio.wait_for(arrived.wait(), 3.0)
            assert errors == []
            return items

    items = asyncio.run(scenario())
    assert [i.devpath for i in items if isinstance(i, Uevent)][-1] == devpath


def test_detached_socket_keeps_events_for_the_next_reader() -> None:
    devpath = _triggerable()[0]

    async def scenario() -> tuple[list[Uevent | EventsLost], Uevent]:
        delivered: list[Uevent | EventsLost] = []
        errors: list[BaseException] = []
        with open_uevent_socket(1 << 20) as sock:
            sock.attach(delivered.extend, errors.append)
            sock.detach()
            _trigger(devpath)
            await asyncio.sleep(0.2)  # the loop turns; nothing is delivered
            assert errors == []
            return delivered, _drain_for(sock, devpath)

    delivered, event = asyncio.run(scenario())
    assert delivered == []
    assert event.devpath == devpath


def test_an_error_while_delivering_detaches_the_socket_and_goes_to_failed() -> None:
    devpath = _triggerable()[0]

    async def scenario() -> tuple[list[BaseException], Uevent]:
        errors: list[BaseException] = []
        told = asyncio.Event()

        def deliver(batch: Sequence[Uevent | EventsLost]) -> None:
            raise RuntimeError("the consumer broke")

        def failed(error: BaseException) -> None:
            errors.append(error)
            told.set()

        with open_uevent_socket(1 << 20) as sock:
            sock.attach(deliver, failed)
            _trigger(devpath)
            await asyncio.wait_for(told.wait(), 3.0)
            _trigger(devpath)  # detached: this one waits in the socket for a reader
            await asyncio.sleep(0.2)
            return errors, _drain_for(sock, devpath)

    errors, event = asyncio.run(scenario())
    assert [str(e) for e in errors] == ["the consumer broke"]
    assert event.devpath == devpath


def test_forged_multicast_from_root_to_group_1_is_rejected_and_counted() -> None:
    with open_uevent_socket(1 << 20) as sock:
        forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        forger.bind((0, 0))
        for _ in range(5):
            forger.sendto(FORGED, (0, KERNEL_GROUP))
        forger.close()
        devpath = _triggerable()[0]
        _trigger(devpath)  # a real event after the forged ones still gets through
        event = _drain_for(sock, devpath)
        stats = sock.statistics()
    assert event.devpath == devpath
    assert stats.dropped == {DropReason.SENDER_NOT_KERNEL: 5}


def test_forged_unicast_to_our_port_id_from_root_is_rejected() -> None:
    with open_uevent_socket(1 << 20) as sock:
        forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        forger.sendto(FORGED, (sock.port_id, 0))
        forger.close()
        time.sleep(0.05)
        accepted = [i for i in sock.receive_nowait() if isinstance(i, Uevent)]
        stats = sock.statistics()
    assert [e.devpath for e in accepted if e.devpath == "/devices/forged"] == []
    assert stats.dropped == {DropReason.SENDER_NOT_KERNEL: 1}


def test_an_unprivileged_user_cannot_even_send_a_forged_uevent(as_nobody: RunAs) -> None:
    # The kernel refuses every send on this family to a userspace destination without
    # CAP_NET_ADMIN (it lacks NL_CFG_F_NONROOT_SEND): unicast to our port id and multicast
    # to group 1 both fail with EPERM, so only root can forge, and root is checked above.
    with open_uevent_socket(1 << 20) as sock:
        port_id = sock.port_id

        def forge() -> str:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
            results = []
            for destination in ((port_id, 0), (0, KERNEL_GROUP)):
                try:
                    s.sendto(FORGED, destination)
                    results.append("sent")
                except PermissionError:
                    results.append("EPERM")
            return " ".join(results)

        out = as_nobody(forge)
        time.sleep(0.05)
        sock.receive_nowait()
        stats = sock.statistics()
    assert out == "EPERM EPERM"
    assert stats.dropped == {}


def test_a_datagram_larger_than_the_limit_is_dropped_as_truncated() -> None:
    with open_uevent_socket(1 << 20) as sock:
        forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        forger.sendto(FORGED + b"X=" + b"x" * 9000 + b"\0", (0, KERNEL_GROUP))
        forger.close()
        time.sleep(0.05)
        sock.receive_nowait()
        assert sock.statistics().dropped == {DropReason.TRUNCATED: 1}


def test_sender_checks_in_order() -> None:
    creds_root = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("iII", 1, 0, 0))]
    creds_user = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("iII", 1, 1000, 0))]
    assert check_sender((0, 1), 0, creds_root) is None
    assert check_sender((0, 1), socket.MSG_TRUNC, creds_root) is DropReason.TRUNCATED
    assert check_sender((4242, 1), 0, creds_root) is DropReason.SENDER_NOT_KERNEL
    assert check_sender((0, 0), 0, creds_root) is DropReason.NOT_MULTICAST_GROUP_1
    assert check_sender((0, 2), 0, creds_root) is DropReason.NOT_MULTICAST_GROUP_1
    assert check_sender((0, 1), 0, []) is DropReason.NO_CREDENTIALS
    assert check_sender((0, 1), 0, creds_user) is DropReason.SENDER_UID_NOT_0


def test_a_tiny_buffer_and_a_burst_of_real_uevents_report_events_lost() -> None:
    devpaths = _triggerable()
    fds = [os.open(f"/sys{d}/uevent", os.O_WRONLY) for d in devpaths]
    try:
        with open_uevent_socket(1) as sock:
            # SO_RCVBUFFORCE of 1 byte gives the kernel's minimum (SOCK_MIN_RCVBUF).
            assert sock.statistics().receive_buffer < 8192
            for i in range(3000):
                os.write(fds[i % len(fds)], b"add")
            first = sock.receive_nowait(10_000)
            assert any(isinstance(i, EventsLost) for i in first)
            assert sock.statistics().overruns == 1
            # After the loss the socket keeps working.
            _trigger(devpaths[0])
            assert _drain_for(sock, devpaths[0]).devpath == devpaths[0]
    finally:
        for fd in fds:
            os.close(fd)


def test_a_large_buffer_is_forced_past_rmem_max_as_root() -> None:
    rmem_max = int(_read_text("/proc/sys/net/core/rmem_max"))
    want = 2 * rmem_max + 4096
    with open_uevent_socket(want) as sock:
        stats = sock.statistics()
    assert stats.receive_buffer_forced is True
    assert stats.receive_buffer == 2 * want  # the kernel doubles what it is given


def test_without_cap_net_admin_the_buffer_falls_back_to_so_rcvbuf_capped_at_rmem_max(
    as_nobody: RunAs,
) -> None:
    rmem_max = int(_read_text("/proc/sys/net/core/rmem_max"))

    def open_as_user() -> str:
        with open_uevent_socket(2 * rmem_max + 4096) as sock:
            s = sock.statistics()
        return f"{s.receive_buffer} {s.receive_buffer_forced}"

    assert as_nobody(open_as_user) == f"{2 * rmem_max} False"


def test_a_socket_activated_uevent_socket_is_adopted() -> None:
    raw = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    raw.bind((0, KERNEL_GROUP))
    with adopt_uevent_socket(raw.detach(), 1 << 20) as sock:
        devpath = _triggerable()[0]
        _trigger(devpath)
        assert _drain_for(sock, devpath).devpath == devpath


def test_adopting_anything_else_is_refused_and_leaves_the_fd_open() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_group = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    other_group.bind((0, 2))
    with pytest.raises(NotAUeventSocket, match="not a NETLINK_KOBJECT_UEVENT socket"):
        adopt_uevent_socket(udp.fileno())
    with pytest.raises(NotAUeventSocket, match="bound to groups 0x2, not 1"):
        adopt_uevent_socket(other_group.fileno())
    assert udp.fileno() >= 0 and os.fstat(udp.fileno())
    udp.close()
    other_group.close()
