"""The control socket under attack: the real daemon on the simulated kernel, attacked as the
unprivileged user `nobody` (and as root where only root can), one test per attack.

Each attack must leave the daemon answering root, say in words why it refused, log what
it refused (rate-limited), and never make the daemon open a path an unprivileged caller chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kmodd.cli.client import EXIT_FAILURE, EXIT_OK, EXIT_PERMISSION
from kmodd.core.varlink_idl import parse_interface
from kmodd.daemon.control.interface import IDL, PRIVILEGES, privilege_table
from kmodd.daemon.varlink import SERVICE_IDL
from kmodd.system.control_client import VarlinkClient, VarlinkClientError
from kmodd.system.journal import Priority
from kmodd.system.netlink import NETLINK_KOBJECT_UEVENT
from kmodd.system.root import Root
from tests.daemon.daemon_tree import (
    MACHINE_MODULES,
    ListSink,
    RunningDaemon,
    kmodctl,
    wait_until,
    write_tree,
)
from tests.fakes import FakeUeventSource
from tests.runas import RunAs

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to uid nobody"),
]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "privileges.md"
NOBODY_UID = 65534
#: The daemon's defaults (kmodd.core.settings): control_max_connections, per user.
MAX_CONNECTIONS = 64
PER_USER = 8
RESERVED = 8
#: What nobody is told when asking the daemon to explain a file by path.
PATH_DENIED = ("only root may have kmodd explain a file by path; name the module or alias "
               "instead, or run `kmodctl explain` as root")
#: Generous bounds that catch an attack that worked, never a slow machine.
RSS_GROWTH_BOUND = 64 * 1024 * 1024


@pytest.fixture
def root() -> Iterator[Root]:
    """A root an unprivileged user can reach the control socket in."""
    base = Path(tempfile.mkdtemp(prefix="kmodd-adversarial-"))
    base.chmod(0o755)
    yield write_tree(base, MACHINE_MODULES)
    shutil.rmtree(base)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _explain_as_nobody(path: str, target: str) -> dict[str, Any]:
    """What nobody's Explain of `target` got: the error's name and parameters, or the reply."""
    with VarlinkClient(path, timeout=10) as client:
        try:
            return {"reply": client.call("io.kmodd.Explain", {"module": target})}
        except VarlinkClientError as e:
            return {"error": e.name, "parameters": e.parameters}


def _explain_json_as_nobody(path: str, target: str) -> str:
    """`_explain_as_nobody` as JSON text (what the `as_nobody` child sends back)."""
    return json.dumps(_explain_as_nobody(path, target))


async def _threads_at_rest(running: RunningDaemon, as_nobody: RunAs) -> set[str]:
    """The daemon's own threads once an Explain by name has run (its pools have started)."""
    path = running.socket_path
    await asyncio.to_thread(as_nobody, lambda: json.dumps(_explain_as_nobody(path, "nosuch")))
    return _daemon_threads()


def _daemon_threads() -> set[str]:
    """Threads but the main one, the loop's default executor (the test's calls run there)
    and asyncio's child watcher (`waitpid-N`: one per explain worker until it is reaped,
    which ends on its own a moment after the worker)."""
    return {t.name for t in threading.enumerate()
            if t is not threading.main_thread() and not t.name.startswith("asyncio_")
            and not t.name.startswith("waitpid-")}


def _run(scenario: Callable[[RunningDaemon], Any], root: Root, **overrides: Any) -> None:
    async def main() -> None:
        running = RunningDaemon(root, source=FakeUeventSource(), **overrides)
        async with running:
            await scenario(running)

    asyncio.run(main())


# -- the written model -------------------------------------------------------------------


def test_the_privilege_table_in_the_docs_is_the_one_the_daemon_authorises_from() -> None:
    served = {f"{i.name}.{m}" for i in (parse_interface(SERVICE_IDL), parse_interface(IDL))
              for m in i.methods}
    assert set(PRIVILEGES) == served
    assert privilege_table() in DOCS.read_text()


# -- Explain never opens a path for an unprivileged caller --------------------------------


def test_nobody_cannot_make_the_daemon_read_dev_zero(root: Root, as_nobody: RunAs) -> None:
    async def scenario(running: RunningDaemon) -> None:
        path = running.socket_path
        threads = await _threads_at_rest(running, as_nobody)
        rss = _rss()
        got = json.loads(await asyncio.to_thread(
            as_nobody, lambda: json.dumps(_explain_as_nobody(path, "/dev/zero"))))
        assert got == {"error": "io.kmodd.PermissionDenied",
                       "parameters": {"reason": PATH_DENIED}}
        said = json.loads(await asyncio.to_thread(
            as_nobody, lambda: json.dumps(kmodctl(path, "explain", "/dev/zero"))))
        assert said == [EXIT_PERMISSION, "",
                        f"kmodctl: explain: permission denied: {PATH_DENIED}\n"]
        assert _rss() - rss < RSS_GROWTH_BOUND
        assert _daemon_threads() == threads

    _run(scenario, root)


def test_nobody_cannot_make_the_daemon_wait_on_a_fifo(root: Root, as_nobody: RunAs,
                                                     tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    fifo = tmp_path / "fifo.ko"
    os.mkfifo(fifo, 0o666)

    async def scenario(running: RunningDaemon) -> None:
        path = running.socket_path
        threads = await _threads_at_rest(running, as_nobody)
        try:
            for target in (str(fifo), "fifo.ko"):  # by path, and by a name that looks like one
                got = json.loads(await asyncio.to_thread(
                    as_nobody, partial(_explain_json_as_nobody, path, target)))
                assert got == {"error": "io.kmodd.PermissionDenied",
                               "parameters": {"reason": PATH_DENIED}}, target
            assert _daemon_threads() == threads
            # Nothing waits on the FIFO: the daemon's own work still runs.
            code, out, _ = await asyncio.to_thread(kmodctl, path, "reload")
            assert (code, out) == (EXIT_OK, "Reloaded (generation 2)\n")
        finally:
            _release(fifo)  # a daemon that did open it must not hang the test

    _run(scenario, root)


def _release(fifo: Path) -> None:
    """Give a reader blocked on `fifo` its end of file (a daemon that did open it)."""
    with contextlib.suppress(OSError):  # no reader: nothing waits on it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_nobody_learns_nothing_of_a_root_only_file(root: Root, as_nobody: RunAs,
                                                   tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir(mode=0o700)
    ko = next(Path(root.path("/lib/modules")).rglob("kmodd-core.ko"))
    secret = secret_dir / "private.ko"
    shutil.copyfile(ko, secret)
    secret.chmod(0o600)
    missing = secret_dir / "missing.ko"

    async def scenario(running: RunningDaemon) -> None:
        path = running.socket_path
        present, absent = [json.loads(await asyncio.to_thread(
            as_nobody, partial(_explain_json_as_nobody, path, str(t))))
            for t in (secret, missing)]
        assert present == absent == {"error": "io.kmodd.PermissionDenied",
                                     "parameters": {"reason": PATH_DENIED}}
        # Root may still have a file explained by path.
        with VarlinkClient(path, timeout=10) as client:
            reply = await asyncio.to_thread(client.call, "io.kmodd.Explain",
                                            {"module": str(secret)})
        assert reply["explanation"]["target"] == str(secret)

    _run(scenario, root)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


# -- root always gets in ------------------------------------------------------------------


def _hold_connections(path: str, count: int, ready: int, go: int) -> str:
    """As nobody: open `count` connections at once, ask each for GetInfo, then say what
    kmodctl says on one more; hold them all until the parent writes to `go`."""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
        held.append(sock)
    answered, refused = 0, []
    for sock in held:
        data = b""
        while not data.endswith(b"\0"):
            chunk = sock.recv(65536)
            assert chunk, "closed without a reply"
            data += chunk
        reply = json.loads(data[:-1])
        if "error" in reply:
            refused.append(reply["parameters"]["reason"])
        else:
            answered += 1
    extra = kmodctl(path, "status")
    os.write(ready, b"x")
    os.read(go, 1)
    for sock in held:
        sock.close()
    return json.dumps({"answered": answered, "refused": refused, "extra": extra})


def _lock_out(running: RunningDaemon, as_nobody: RunAs, count: int) -> Any:
    async def attack() -> tuple[dict[str, Any], tuple[int, str, str]]:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        path = running.socket_path
        child = asyncio.ensure_future(asyncio.to_thread(
            as_nobody, lambda: _hold_connections(path, count, ready_w, go_r)))
        try:
            await asyncio.to_thread(os.read, ready_r, 1)
            as_root = await asyncio.to_thread(kmodctl, path, "status")
        finally:
            os.write(go_w, b"x")
            held = json.loads(await child)
            for fd in (ready_r, ready_w, go_r, go_w):
                os.close(fd)
        return held, as_root

    return attack()


def _refusal_lines(sink: ListSink) -> list[str]:
    return [text for priority, text in sink.messages
            if priority == Priority.WARNING and text.startswith("Control client over its limits")]


def test_idle_connections_of_nobody_never_lock_root_out(root: Root, as_nobody: RunAs) -> None:
    async def scenario(running: RunningDaemon) -> None:
        held, as_root = await _lock_out(running, as_nobody, MAX_CONNECTIONS)
        too_many = f"user {NOBODY_UID} already has {PER_USER} connections open (limit {PER_USER})"
        assert held["answered"] == PER_USER
        assert held["refused"] == [too_many] * (MAX_CONNECTIONS - PER_USER)
        assert held["extra"] == [EXIT_FAILURE, "",
                                 f"kmodctl: the daemon refused the connection: {too_many}\n"]
        code, out, err = as_root
        assert (code, err) == (EXIT_OK, "")
        assert "State: running" in out
        # Refusals are logged, at most one line per uid per 10 s.
        lines = _refusal_lines(running.sink)  # type: ignore[arg-type]
        assert len(lines) == 1
        assert lines[0].startswith(f"Control client over its limits (uid {NOBODY_UID}, pid ")
        assert lines[0].endswith(f"): {too_many}")

    _run(scenario, root)


def test_unprivileged_users_together_leave_the_reserve_to_root(root: Root,
                                                               as_nobody: RunAs) -> None:
    async def scenario(running: RunningDaemon) -> None:
        held, as_root = await _lock_out(running, as_nobody, MAX_CONNECTIONS)
        shared = MAX_CONNECTIONS - RESERVED
        full = (f"unprivileged users hold {shared} connections, all they may (the other "
                f"{RESERVED} are kept for root)")
        assert held["answered"] == shared
        assert held["refused"] == [full] * RESERVED
        assert held["extra"] == [EXIT_FAILURE, "",
                                 f"kmodctl: the daemon refused the connection: {full}\n"]
        assert as_root[0] == EXIT_OK

    _run(scenario, root, control_max_connections_per_user=MAX_CONNECTIONS)


# -- every request gets a reply -----------------------------------------------------------


def _raw_calls(path: str, *requests: bytes) -> list[dict[str, Any]]:
    """Send NUL-terminated requests on one connection; one reply each, in order."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"".join(r + b"\0" for r in requests))
        data, replies = b"", list[Any]()
        while len(replies) < len(requests):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(replies)} replies"
            data += chunk
            while b"\0" in data:
                message, _, data = data.partition(b"\0")
                replies.append(json.loads(message))
        return replies


def test_a_5000_digit_integer_is_answered_and_the_connection_goes_on(
        root: Root, as_nobody: RunAs) -> None:
    huge = b'{"method":"io.kmodd.Why","parameters":{"target":' + b"9" * 5000 + b"}}"

    async def scenario(running: RunningDaemon) -> None:
        path = running.socket_path
        replies = json.loads(await asyncio.to_thread(as_nobody, lambda: json.dumps(
            _raw_calls(path, huge, b'{"method":"io.kmodd.GetStatus"}'))))
        assert replies[0]["error"] == "io.kmodd.InvalidRequest"
        assert "Exceeds the limit (4300 digits)" in replies[0]["parameters"]["reason"]
        assert replies[1]["parameters"]["status"]["state"] == "running"

    _run(scenario, root)


def test_a_lone_surrogate_is_refused_naming_the_field(root: Root, as_nobody: RunAs) -> None:
    async def scenario(running: RunningDaemon) -> None:
        path = running.socket_path
        replies = json.loads(await asyncio.to_thread(as_nobody, lambda: json.dumps(_raw_calls(
            path,
            b'{"method":"io.kmodd.Why","parameters":{"target":"pci:\\ud800"}}',
            b'{"method":"io.kmodd.Why\\udc00"}',
            b'{"method":"io.kmodd.GetStatus"}'))))
        assert replies[0] == {"error": "org.varlink.service.InvalidParameter",
                              "parameters": {"parameter": "target"}}
        assert replies[1] == {"error": "io.kmodd.InvalidRequest", "parameters": {
            "reason": "the method name is not valid Unicode (a lone surrogate)"}}
        assert replies[2]["parameters"]["status"]["state"] == "running"
        assert not [t for p, t in running.logged.messages
                    if p <= Priority.ERR]

    _run(scenario, root)


def test_a_handler_failure_is_answered_and_logged_once_with_the_method(root: Root) -> None:
    async def scenario(running: RunningDaemon) -> None:
        control = running.daemon.start_control()

        def broken(target: str) -> None:
            raise OSError(5, "Input/output error \udcff")

        control.why = broken  # type: ignore[method-assign]
        why = b'{"method":"io.kmodd.Why","parameters":{"target":"pci:v1"}}'
        replies = await asyncio.to_thread(_raw_calls, running.socket_path, why, why, why)
        assert replies == [{"error": "io.kmodd.InternalError", "parameters": {
            "reason": "OSError: [Errno 5] Input/output error \udcff"}}] * 3
        errors = [t for p, t in running.logged.messages
                  if p == Priority.ERR]
        assert errors == ["Internal error in 'io.kmodd.Why': OSError: [Errno 5] Input/output "
                          "error \\udcff"]

    _run(scenario, root)


def test_a_flood_of_requests_is_slowed_to_the_rate_answered_whole_and_logged(
        root: Root, as_nobody: RunAs) -> None:
    burst, rate, requests = 5, 50, 30
    status = b'{"method":"io.kmodd.GetStatus"}'

    async def scenario(running: RunningDaemon) -> None:
        path = running.socket_path
        service = running.daemon.start_control().service
        assert service is not None
        replies = json.loads(await asyncio.to_thread(as_nobody, lambda: json.dumps(
            _raw_calls(path, *[status] * requests))))
        # Every request is answered; those past the burst waited for their turn.
        assert [sorted(r) for r in replies] == [["parameters"]] * requests
        assert service.statistics().rate_limited == requests - burst
        lines = _refusal_lines(running.sink)  # type: ignore[arg-type]
        assert len(lines) == 1 and lines[0].endswith(
            f"): more than {burst} requests at once or {rate} a second on one connection: "
            "slowed down")
        # Root is not metered.
        as_root = await asyncio.to_thread(_raw_calls, path, *[status] * requests)
        assert all("error" not in r for r in as_root)
        assert service.statistics().rate_limited == requests - burst

    _run(scenario, root, control_request_burst=burst, control_request_rate=rate)


# -- uevents ------------------------------------------------------------------------------

FORGED = (b"add@/devices/kmodd-forged\0ACTION=add\0DEVPATH=/devices/kmodd-forged\0"
          b"SUBSYSTEM=platform\0MODALIAS=platform:serial8250\0SEQNUM=1\0")


def test_forged_uevents_are_logged_with_the_sender(root: Root) -> None:
    async def main() -> None:
        running = RunningDaemon(root, receive_buffer=1 << 20)  # the real uevent socket
        async with running as daemon:
            assert daemon.intake is not None
            port_id = daemon.intake.source.port_id  # type: ignore[attr-defined]
            with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                               NETLINK_KOBJECT_UEVENT) as forger:
                forger.bind((0, 0))
                sender = forger.getsockname()[0]
                for _ in range(5):
                    forger.sendto(FORGED, (port_id, 0))  # unicast to the daemon: only it sees
            sink: ListSink = running.sink  # type: ignore[assignment]

            def lines() -> list[str]:
                return [t for p, t in sink.messages
                        if p == Priority.WARNING and t.startswith("Rejected a uevent")]

            await wait_until(lambda: bool(lines()), what="the rejection's log line")
            await wait_until(lambda: daemon.intake is not None and sum(
                daemon.intake.source.statistics().dropped.values()) >= 5, what="all 5 counted")
            assert lines() == [f"Rejected a uevent from netlink port {sender} (pid "
                               f"{os.getpid()}, uid 0) sent to groups 0x0: sender-not-kernel, "
                               "ignoring"]

    asyncio.run(main())


# -- memory stays bounded ------------------------------------------------------------------

DESCRIBE = b'{"method":"org.varlink.service.GetInterfaceDescription",' \
           b'"parameters":{"interface":"io.kmodd"}}\0'
#: Requests each non-reading connection sends: its replies would be megabytes if served.
UNREAD_REQUESTS = 400


def _ask_and_never_read(path: str, ready: int, go: int) -> str:
    """As nobody: PER_USER connections, each sending UNREAD_REQUESTS requests and reading no
    reply; hold them until the parent writes to `go`."""
    held = []
    for _ in range(PER_USER):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        held.append(sock)
    for sock in held:
        data = DESCRIBE * UNREAD_REQUESTS
        with contextlib.suppress(BlockingIOError):
            while data:  # as much as the kernel takes: the daemon stops reading at some point
                data = data[sock.send(data):]
    os.write(ready, b"x")
    os.read(go, 1)
    for sock in held:
        sock.close()
    return "done"


def test_clients_that_never_read_their_replies_cost_one_reply_each_not_their_requests(
        root: Root, as_nobody: RunAs) -> None:
    reply_size = len(json.dumps({"parameters": {"description": IDL}}).encode()) + 1

    async def scenario(running: RunningDaemon) -> None:
        service = running.daemon.start_control().service
        assert service is not None
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        path = running.socket_path
        child = asyncio.ensure_future(asyncio.to_thread(
            as_nobody, lambda: _ask_and_never_read(path, ready_w, go_r)))
        try:
            await asyncio.to_thread(os.read, ready_r, 1)
            served = -1
            while served != service.statistics().requests:  # until serving stops
                served = service.statistics().requests
                await asyncio.sleep(0.3)
            pending = sum(c._transport.get_write_buffer_size()
                          for c in service._connections if c._transport is not None)
            # Each connection was served until its replies filled the socket and the
            # transport's high-water mark (64 KiB), then no more: not 8 x 400 requests.
            assert served < PER_USER * UNREAD_REQUESTS // 4
            assert pending <= PER_USER * (64 * 1024 + reply_size)
            code, out, _ = await asyncio.to_thread(kmodctl, path, "status")
            assert (code, "State: running" in out) == (EXIT_OK, True)
        finally:
            os.write(go_w, b"x")
            await child
            for fd in (ready_r, ready_w, go_r, go_w):
                os.close(fd)

    _run(scenario, root)
