"""daemon.varlink: hostile, broken, slow and greedy clients never disturb the others."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmodd.core.varlink_idl import parse_interface
from kmodd.daemon.events import EventHub
from kmodd.daemon.varlink import Call, Limits, Method, ProtocolErrors, VarlinkService
from kmodd.system.control_client import VarlinkClient, VarlinkClientError
from tests.daemon.control_harness import FakeState, RunningServer, start_control

LIMITS = Limits(
    max_request_bytes=4096,
    max_connections=8,
    idle_timeout=0.6,
    request_timeout=0.3,
    max_pending_reply_bytes=256 * 1024,
    max_queued_requests=4,
    refusal_delay=0.0,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningServer, FakeState, EventHub]]:
    server, state, hub = start_control(str(tmp_path / "io.kmodd"), limits=LIMITS)
    yield server, state, hub
    server.stop()


_pending: dict[int, bytes] = {}


def _raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    _pending.pop(sock.fileno(), None)  # a reused descriptor number starts clean
    return sock


def _read_reply(sock: socket.socket) -> dict[str, Any]:
    """The next NUL-terminated reply; bytes after it wait for the next call."""
    data = _pending.pop(sock.fileno(), b"")
    while b"\0" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    message, _, rest = data.partition(b"\0")
    if rest:
        _pending[sock.fileno()] = rest
    reply: dict[str, Any] = json.loads(message)
    return reply


def _closed(sock: socket.socket, within: float = 5.0) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _healthy(path: str) -> bool:
    with VarlinkClient(path, timeout=5) as client:
        return bool(client.call("io.kmodd.GetStatus")["status"]["state"] == "running")


def test_an_oversized_request_is_answered_then_disconnected(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    other = VarlinkClient(server.path, timeout=5)
    hostile = _raw(server.path)
    hostile.sendall(b'{"method":"io.kmodd.Why","parameters":{"target":"' + b"x" * 8192)
    assert _read_reply(hostile) == {"error": "io.kmodd.RequestTooLarge",
                                    "parameters": {"limit": 4096}}
    assert _closed(hostile)
    assert other.call("io.kmodd.GetStatus")["status"]["state"] == "running"
    other.close()
    assert server.service.statistics().disconnects["request-too-large"] == 1


def test_malformed_requests_are_answered_and_the_connection_stays_usable(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    sock = _raw(server.path)
    cases = [
        (b"{not json", "not JSON: Expecting property name enclosed in double quotes: line 1 "
                       "column 2 (char 1)"),
        (b"\xff\xfe", None),
        (b"[1, 2]", "a request must be a JSON object"),
        (b'{"parameters": {}}', "a request needs a method"),
        (b'{"method": 7}', "request field 'method' has the wrong type"),
        (b'{"method": "nodot"}', "a method name is interface.Method"),
        (b'{"method": "io.kmodd.GetStatus", "bogus": 1}', "unknown request field 'bogus'"),
        (b'{"method": "io.kmodd.GetStatus", "upgrade": true}',
         "protocol upgrades are not supported"),
        (b'{"method": "io.kmodd.Monitor", "more": true, "oneway": true}',
         "oneway and more exclude each other"),
        (b"[" * 2000 + b"]" * 2000, None),  # deeper than the JSON decoder recurses
        (b"", "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ]
    for request, reason in cases:
        sock.sendall(request + b"\0")
        reply = _read_reply(sock)
        assert reply["error"] == "io.kmodd.InvalidRequest", request[:40]
        if reason is not None:
            assert reply["parameters"] == {"reason": reason}
    sock.sendall(b'{"method":"io.kmodd.GetStatus"}\0')
    assert _read_reply(sock)["parameters"]["status"]["state"] == "running"
    sock.close()


def test_a_client_that_half_closes_still_gets_its_answers(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    sock = _raw(served[0].path)
    sock.sendall(b'{"method":"io.kmodd.GetStatus"}\0{"method":"io.kmodd.ListModules"}\0')
    sock.shutdown(socket.SHUT_WR)
    assert "status" in _read_reply(sock)["parameters"]
    assert "modules" in _read_reply(sock)["parameters"]
    assert _closed(sock)
    assert served[0].service.statistics().disconnects["client-done"] == 1


def test_pipelined_requests_are_answered_in_order(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    sock = _raw(served[0].path)
    sock.sendall(b'{"method":"io.kmodd.ListModules","parameters":{"name":"pcspkr"}}\0'
                 b'{"method":"io.kmodd.Nope"}\0'
                 b'{"method":"io.kmodd.ListModules","parameters":{"name":"virtio_net"}}\0')
    first, second, third = (_read_reply(sock) for _ in range(3))
    assert first["parameters"]["modules"][0]["name"] == "pcspkr"
    assert second == {"error": "org.varlink.service.MethodNotFound",
                      "parameters": {"method": "io.kmodd.Nope"}}
    assert third["parameters"]["modules"][0]["name"] == "virtio_net"
    sock.close()


def test_a_client_that_stalls_mid_request_is_dropped_while_others_are_served(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    slow = _raw(server.path)
    slow.sendall(b'{"method":"io.kmodd.GetSt')
    started = time.monotonic()
    assert _healthy(server.path)  # served while the slow one dangles
    assert _closed(slow, within=5.0)
    assert time.monotonic() - started < 5.0
    assert server.service.statistics().disconnects["request-timeout"] == 1


def test_a_trickling_client_cannot_extend_its_request_deadline(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    slow = _raw(server.path)
    request = b'{"method":"io.kmodd.GetStatus"}\0'
    pause = LIMITS.request_timeout / 6  # each byte well inside the timeout
    sent = 0
    started = time.monotonic()
    try:
        for byte in request:
            slow.sendall(bytes([byte]))
            sent += 1
            time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):
        pass
    elapsed = time.monotonic() - started
    # Cut off about request_timeout after the first byte, long before the last one.
    assert sent < len(request)
    assert elapsed < len(request) * pause
    assert server.service.statistics().disconnects == {"request-timeout": 1}


def test_an_idle_connection_is_closed(served: tuple[RunningServer, FakeState, EventHub]) -> None:
    server = served[0]
    idle = _raw(server.path)
    idle.sendall(b'{"method":"io.kmodd.GetStatus"}\0')
    _read_reply(idle)
    assert _closed(idle)
    assert server.service.statistics().disconnects["idle-timeout"] == 1


def test_abandoned_connections_leave_nothing_behind(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    service = server.service
    for n in range(1, 3 * LIMITS.max_connections + 1):
        sock = _raw(server.path)
        sock.sendall(b'{"method":"io.kmodd.GetSta')
        sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now = service.statistics()
            if now.accepted >= n and not now.open:
                break
            time.sleep(0.005)
        stats = service.statistics()
        assert (stats.accepted, stats.open) == (n, 0)
    # Three times max_connections were abandoned, none was refused: all were forgotten.
    assert service.statistics().refused == 0
    assert _healthy(server.path)


def test_connections_beyond_the_limit_are_refused_and_the_rest_served(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    held = [VarlinkClient(server.path, timeout=5) for _ in range(LIMITS.max_connections)]
    for client in held:
        client.call("io.kmodd.GetStatus")  # all admitted
    extra = _raw(server.path)
    assert _closed(extra)
    assert held[0].call("io.kmodd.GetStatus")["status"]["state"] == "running"
    held.pop().close()
    time.sleep(0.1)
    assert _healthy(server.path)
    for client in held:
        client.close()
    assert server.service.statistics().refused == 1


def test_a_client_that_never_reads_its_replies_is_disconnected(
    served: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server = served[0]
    greedy = _raw(server.path)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = b'{"method":"org.varlink.service.GetInterfaceDescription",' \
              b'"parameters":{"interface":"io.kmodd"}}\0'
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and not \
                server.service.statistics().disconnects["not-reading"]:
            greedy.sendall(request * 8)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    assert server.service.statistics().disconnects["not-reading"] == 1
    assert _healthy(server.path)
    greedy.close()


def test_a_handler_that_crashes_costs_one_error_reply(tmp_path: Path) -> None:
    idl = "interface io.test\nmethod Boom() -> ()\nmethod Fine() -> (ok: bool)\n" \
          "method Missing() -> ()\nerror Internal (reason: string)\n"
    crashes: list[str] = []
    service = VarlinkService(
        vendor="t", product="t", version="1", url="",
        errors=ProtocolErrors("io.test.Invalid", "io.test.TooLarge", "io.test.Internal"),
        on_internal_error=lambda method, exc: crashes.append(f"{method}: {exc}"),
    )

    async def boom(call: Call) -> dict[str, Any]:
        raise KeyError("no such thing")

    async def fine(call: Call) -> dict[str, Any]:
        return {"ok": True}

    service.add_interface(idl, {"Boom": Method(boom), "Fine": Method(fine)})
    server = RunningServer(service, str(tmp_path / "s"))
    try:
        with VarlinkClient(server.path, timeout=5) as client:
            with pytest.raises(VarlinkClientError) as info:
                client.call("io.test.Boom")
            assert (info.value.name, info.value.parameters) == (
                "io.test.Internal", {"reason": "KeyError: 'no such thing'"})
            with pytest.raises(VarlinkClientError) as info:
                client.call("io.test.Missing")
            assert info.value.name == "org.varlink.service.MethodNotImplemented"
            assert client.call("io.test.Fine") == {"ok": True}
    finally:
        server.stop()
    assert crashes == ["io.test.Boom: 'no such thing'"]


def test_handlers_for_undeclared_methods_are_a_programming_error() -> None:
    service = VarlinkService(vendor="t", product="t", version="1", url="",
                             errors=ProtocolErrors("a.b.C", "a.b.D", "a.b.E"))

    async def noop(call: Call) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match=r"io.test: handlers for undeclared methods \['Ghost'\]"):
        service.add_interface("interface io.test\nmethod Real() -> ()\n",
                              {"Ghost": Method(noop)})
    assert parse_interface("interface io.test\nmethod Real() -> ()\n").methods.keys() == {"Real"}


def test_every_connection_task_ends_with_the_server(tmp_path: Path) -> None:
    """Serving ends only once the task of every connection has ended, a busy one too."""
    import asyncio

    service = VarlinkService(vendor="t", product="t", version="1", url="",
                             errors=ProtocolErrors("a.b.C", "a.b.D", "a.b.E"))
    started = asyncio.Event()
    ended: list[str] = []

    async def slow(call: Call) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            ended.append("slow")
        return {}

    service.add_interface("interface io.test\nmethod Slow() -> ()\n", {"Slow": Method(slow)})
    path = str(tmp_path / "s")

    async def scenario() -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        serving = asyncio.get_running_loop().create_task(service.serve(listener))
        clients = []
        for _ in range(3):  # connected and idle: each has its task waiting for a request
            _, writer = await asyncio.open_unix_connection(path)
            clients.append(writer)
        clients[0].write(json.dumps({"method": "io.test.Slow"}).encode() + b"\0")
        await asyncio.wait_for(started.wait(), 5)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        assert (ended, asyncio.all_tasks()) == (["slow"], {asyncio.current_task()})
        for writer in clients:
            writer.close()
        listener.close()

    asyncio.run(scenario())
