"""A Varlink server on asyncio: NUL-terminated JSON calls, IDL-checked, limited, credentialed.

Protocol (varlink.org): a client sends `{"method": "iface.Method", "parameters": {...}}`
followed by a NUL byte, optionally with `"oneway": true` (no reply) or `"more": true` (a
stream of replies, each `{"parameters": {...}, "continues": true}` but the last). Errors are
`{"error": "iface.Error", "parameters": {...}}`. Requests on one connection are answered in
order. Every service implements `org.varlink.service` (`GetInfo`, `GetInterfaceDescription`).

This module is generic; `daemon/control/` defines kmodd's interface and handlers. Input
parameters are checked against the method's IDL before a handler runs, so a handler only ever
sees well-typed values. A misbehaving client can cost the daemon at most the named `Limits`:
an oversized request is answered and the connection closed, a malformed one is answered, a
client that stalls mid-request, idles, or stops reading its replies is disconnected, and
connections beyond the limit are closed on accept.

Root always gets in: a connection is admitted by its peer's credentials. Unprivileged
peers (neither uid 0 nor what the `privileged` predicate accepts) may hold at most
`max_connections_per_user` connections each and, all together, `max_connections` less the
reserve (`reserved_connections`, at most half of `max_connections`), and each of their
connections may send `request_burst` requests at once and `request_rate` a second on
average: a request over the rate waits for its turn (the connection's reading pauses), so a
flood costs the daemon the rate, not one reply per request. A refused connection is told why
in a Varlink error before it is closed, so a client can say it in words; the refusal is held
back for `refusal_delay` (a tarpit: a client reconnecting in a loop costs one accept a
second) unless `MAX_DELAYED_REFUSALS` are already waiting.

Every complete request gets exactly one reply (or its stream): JSON that Python's decoder
refuses for any reason (ValueError: bad syntax, bad UTF-8, an integer of more than 4300
digits; RecursionError: deep nesting), `NaN`/`Infinity`, and strings that cannot be
encoded (lone surrogates such as `"\\ud800"`) are answered as invalid, naming the field;
a handler's failure is answered as an internal error and reported to `on_internal_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmodd.core.varlink_idl import Interface, check_value, parse_interface
from kmodd.daemon.throttle import TokenBucket

SERVICE_INTERFACE = "org.varlink.service"
#: org.varlink.service as the current Varlink specification has it (PermissionDenied and
#: ExpectedMore were added after the first edition).
SERVICE_IDL = """\
# The Varlink Service Interface is provided by every varlink service. It
# describes the service and the interfaces it implements.
interface org.varlink.service

# Get a list of all the interfaces a service provides and information
# about the implementation.
method GetInfo() -> (
  vendor: string,
  product: string,
  version: string,
  url: string,
  interfaces: []string
)

# Get the description of an interface that is implemented by this service.
method GetInterfaceDescription(interface: string) -> (description: string)

# The requested interface was not found.
error InterfaceNotFound (interface: string)

# The requested method was not found
error MethodNotFound (method: string)

# The interface defines the requested method, but the service does not
# implement it.
error MethodNotImplemented (method: string)

# One of the passed parameters is invalid.
error InvalidParameter (parameter: string)

# Client is denied access
error PermissionDenied ()

# Method is expected to be called with 'more' set to true, but wasn't
error ExpectedMore ()
"""

#: SO_PEERGROUPS (Linux 4.13), not exported by Python's socket module.
SO_PEERGROUPS = 59
_UCRED = struct.Struct("iII")
#: Supplementary groups read per peer (Python's getsockopt buffer holds at most 1024 bytes;
#: a peer in more groups is treated as in none of them but its primary group).
MAX_PEER_GROUPS = 256
#: Refused connections waiting for `Limits.refusal_delay` at most; more are told at once.
MAX_DELAYED_REFUSALS = 64
#: Reads (of 64 KiB) that drain what a refused client sent before it is told and closed.
DRAIN_READS = 4


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server."""

    #: Largest request, in bytes, NUL excluded.
    max_request_bytes: int = 64 * 1024
    #: Connections open at once; more are closed as soon as they are accepted.
    max_connections: int = 64
    #: A connection with no request in progress is closed after this many seconds.
    idle_timeout: float = 60.0
    #: A request must arrive whole within this many seconds of its first byte.
    request_timeout: float = 10.0
    #: Replies queued for a client that does not read them; beyond this it is disconnected.
    max_pending_reply_bytes: int = 4 * 1024 * 1024
    #: Complete requests buffered per connection before reading from it pauses.
    max_queued_requests: int = 16
    #: Connections one unprivileged user (uid) may hold open at once.
    max_connections_per_user: int = 8
    #: Of `max_connections`, how many only privileged peers may use (capped at half).
    reserved_connections: int = 8
    #: Requests an unprivileged connection may send per second on average...
    request_rate: int = 20
    #: ...and at once, after a quiet spell.
    request_burst: int = 40
    #: A refused connection is told why and closed this many seconds after it came (a
    #: tarpit), unless MAX_DELAYED_REFUSALS are already waiting: then at once.
    refusal_delay: float = 1.0

    @property
    def reserve(self) -> int:
        """Connections kept for privileged peers: never more than half of them all."""
        return min(self.reserved_connections, self.max_connections // 2)


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end (SO_PEERCRED, SO_PEERGROUPS)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Call:
    """One method call as a handler sees it: parameters already checked against the IDL."""

    method: str
    parameters: Mapping[str, Any]
    peer: Peer
    more: bool = False
    oneway: bool = False


class VarlinkError(Exception):
    """Raised by a handler to send a Varlink error reply."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.parameters = dict(parameters or {})


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply of a streaming method; `continues` False ends the stream."""

    parameters: Mapping[str, Any]
    continues: bool = True


Handler = Callable[[Call], Awaitable[Mapping[str, Any]]]
StreamHandler = Callable[[Call], AsyncIterator[Reply]]
Authorizer = Callable[[Call], VarlinkError | None]


@dataclass(frozen=True, slots=True)
class Method:
    """A registered method: its handler (plain or streaming) and who may call it."""

    handler: Handler | None = None
    stream: StreamHandler | None = None
    authorize: Authorizer | None = None


@dataclass(frozen=True, slots=True)
class ProtocolErrors:
    """Error names for failures that happen before any interface is involved.

    `too_many_connections` (parameters `limit`, `reason`) defaults to that name in the
    interface of `invalid_request`.
    """

    invalid_request: str
    request_too_large: str
    internal: str
    too_many_connections: str = ""

    def named(self, error: str) -> str:
        """The full name of `error` ("TooManyConnections") beside `invalid_request`."""
        return f"{self.invalid_request.rpartition('.')[0]}.{error}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection was not admitted: the limit that refused it, in words."""

    limit: int
    reason: str


@dataclass(slots=True)
class ServerStatistics:
    accepted: int = 0
    refused: int = 0
    open: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0


def peer_credentials(sock: socket.socket) -> Peer:
    """SO_PEERCRED, and SO_PEERGROUPS where the kernel has it."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_PEER_GROUPS)
        groups = tuple(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError as e:
        if e.errno not in (errno.ENOPROTOOPT, errno.ERANGE):
            raise
    return Peer(pid, uid, gid, groups)


class VarlinkService:
    """Interfaces, their method handlers, and the connections being served."""

    def __init__(
        self,
        *,
        vendor: str,
        product: str,
        version: str,
        url: str,
        errors: ProtocolErrors,
        limits: Limits | None = None,
        check_replies: bool = False,
        on_internal_error: Callable[[str, BaseException], None] | None = None,
        privileged: Callable[[Peer], bool] | None = None,
        on_refusal: Callable[[Peer, str], None] | None = None,
    ) -> None:
        """`privileged(peer)`: exempt from the per-user quota and the rate limit and may use
        the reserve (uid 0 always is); `on_refusal(peer, reason)`: told of every refused
        connection and rate-limited request; `on_internal_error(method, exception)`: told
        of every handler failure."""
        self._info = {"vendor": vendor, "product": product, "version": version, "url": url}
        self._errors = errors
        self._too_many_connections = (errors.too_many_connections
                                      or errors.named("TooManyConnections"))
        self._privileged = privileged
        self._on_refusal = on_refusal
        self.limits = limits or Limits()
        self._check_replies = check_replies
        self._on_internal_error = on_internal_error
        self._interfaces: dict[str, Interface] = {}
        self._descriptions: dict[str, str] = {}
        self._methods: dict[str, Method] = {}
        self._connections: set[_Connection] = set()
        #: The task group of the connections being served (set while `serve` runs).
        self._tasks: asyncio.TaskGroup | None = None
        #: Refused connections waiting for `Limits.refusal_delay` to pass before they are told.
        self.delayed_refusals = 0
        #: Open connections of unprivileged peers, all together and per uid.
        self._unprivileged = 0
        self._per_user: Counter[int] = Counter()
        self._stats = ServerStatistics()
        self.add_interface(SERVICE_IDL, {
            "GetInfo": Method(self._get_info),
            "GetInterfaceDescription": Method(self._get_interface_description),
        })

    def statistics(self) -> ServerStatistics:
        """The counters as they are now (a copy)."""
        stats = self._stats
        return ServerStatistics(stats.accepted, stats.refused, stats.open, stats.requests,
                                Counter(stats.errors), Counter(stats.disconnects),
                                stats.rate_limited)

    def add_interface(self, idl: str, methods: Mapping[str, Method]) -> Interface:
        """Register an interface from its IDL text, with a Method for (some of) its methods."""
        interface = parse_interface(idl)
        unknown = set(methods) - set(interface.methods)
        if unknown:
            raise ValueError(f"{interface.name}: handlers for undeclared methods {sorted(unknown)}")
        self._interfaces[interface.name] = interface
        self._descriptions[interface.name] = idl
        for name, method in methods.items():
            self._methods[f"{interface.name}.{name}"] = method
        return interface

    @property
    def interfaces(self) -> Mapping[str, Interface]:
        return self._interfaces

    async def _get_info(self, call: Call) -> Mapping[str, Any]:
        return {**self._info, "interfaces": list(self._interfaces)}

    async def _get_interface_description(self, call: Call) -> Mapping[str, Any]:
        name = call.parameters["interface"]
        if name not in self._descriptions:
            raise VarlinkError(f"{SERVICE_INTERFACE}.InterfaceNotFound", {"interface": name})
        return {"description": self._descriptions[name]}

    # -- serving --------------------------------------------------------------------------

    async def serve(self, listener: socket.socket) -> None:
        """Accept and serve connections on a listening AF_UNIX socket until cancelled."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        # Every connection's task belongs to this group: when serving ends, each is cancelled
        # and waited for here, none outlives the server.
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            server = await loop.create_unix_server(lambda: _Connection(self), sock=listener)
            try:
                await server.serve_forever()
            finally:
                self._tasks = None
                server.close()
                for connection in list(self._connections):
                    connection.close("server-stopping")

    def is_privileged(self, peer: Peer) -> bool:
        """Root, or whom the service's `privileged` predicate accepts."""
        return peer.uid == 0 or (self._privileged is not None and self._privileged(peer))

    def _refusal(self, connection: _Connection) -> Refusal | None:
        """The limit a new connection would break, or None to admit it."""
        limits = self.limits
        total = len(self._connections)
        if total >= limits.max_connections:
            return Refusal(limits.max_connections,
                           f"{total} control connections are open (limit "
                           f"{limits.max_connections})")
        if connection.privileged:
            return None
        uid = connection.peer.uid
        held = self._per_user[uid]
        if held >= limits.max_connections_per_user:
            return Refusal(limits.max_connections_per_user,
                           f"user {uid} already has {held} connections open (limit "
                           f"{limits.max_connections_per_user})")
        shared = limits.max_connections - limits.reserve
        if self._unprivileged >= shared:
            return Refusal(shared,
                           f"unprivileged users hold {self._unprivileged} connections, all "
                           f"they may (the other {limits.reserve} are kept for root)")
        return None

    def _admit(self, connection: _Connection) -> Refusal | None:
        refusal = self._refusal(connection)
        if refusal is not None:
            self._stats.refused += 1
            self._refused(connection.peer, refusal.reason)
            return refusal
        self._connections.add(connection)
        if not connection.privileged:
            self._unprivileged += 1
            self._per_user[connection.peer.uid] += 1
        self._stats.accepted += 1
        self._stats.open = len(self._connections)
        return None

    def _forget(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        if not connection.privileged:
            self._unprivileged -= 1
            uid = connection.peer.uid
            self._per_user[uid] -= 1
            if self._per_user[uid] <= 0:
                del self._per_user[uid]
        self._stats.open = len(self._connections)

    def _refused(self, peer: Peer, reason: str) -> None:
        if self._on_refusal is not None:
            self._on_refusal(peer, reason)

    async def dispatch(self, message: Mapping[str, Any], peer: Peer) -> AsyncIterator[Reply]:
        """Check one decoded request and run its handler; yield the replies to send."""
        method_name = message["method"]
        interface_name, _, short = method_name.rpartition(".")
        interface = self._interfaces.get(interface_name)
        if interface is None:
            raise VarlinkError(f"{SERVICE_INTERFACE}.InterfaceNotFound",
                               {"interface": interface_name})
        signature = interface.methods.get(short)
        if signature is None:
            raise VarlinkError(f"{SERVICE_INTERFACE}.MethodNotFound", {"method": method_name})
        method = self._methods.get(method_name)
        if method is None:
            raise VarlinkError(f"{SERVICE_INTERFACE}.MethodNotImplemented",
                               {"method": method_name})
        parameters = message.get("parameters") or {}
        problem = check_value(parameters, signature.input, interface)
        if problem is not None:
            raise VarlinkError(f"{SERVICE_INTERFACE}.InvalidParameter", {"parameter": problem})
        call = Call(method_name, parameters, peer, bool(message.get("more")),
                    bool(message.get("oneway")))
        if method.authorize is not None:
            denied = method.authorize(call)
            if denied is not None:
                raise denied
        if method.stream is not None:
            if not call.more:
                raise VarlinkError(f"{SERVICE_INTERFACE}.ExpectedMore")
            async for reply in method.stream(call):
                self._check_reply(interface, short, reply.parameters)
                yield reply
                if not reply.continues:
                    return
            return
        assert method.handler is not None
        result = await method.handler(call)
        self._check_reply(interface, short, result)
        yield Reply(result, continues=False)

    def _check_reply(
        self, interface: Interface, method: str, parameters: Mapping[str, Any]
    ) -> None:
        if not self._check_replies:
            return
        problem = check_value(parameters, interface.methods[method].output, interface)
        if problem is not None:
            raise AssertionError(f"{interface.name}.{method} reply does not match its IDL at "
                                 f"{problem!r}: {parameters!r}")

    def internal_error(self, method: str, exc: BaseException) -> VarlinkError:
        if self._on_internal_error is not None:
            self._on_internal_error(method, exc)
        return VarlinkError(self._errors.internal, {"reason": f"{type(exc).__name__}: {exc}"})


def _encode(message: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\0"
    except UnicodeEncodeError:
        # A lone surrogate (a file name decoded with surrogateescape, a client's string
        # echoed in an error) has no UTF-8 form; JSON's escapes carry it.
        return json.dumps(message, separators=(",", ":")).encode() + b"\0"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_request(raw: bytes) -> Any:
    """JSON as Varlink means it; ValueError or RecursionError for anything else (NaN and
    Infinity, which Python's decoder accepts, included)."""
    return json.loads(raw, parse_constant=_no_constants)


def unencodable(value: Any) -> str | None:
    """The path (`parameters.target`, `parameters['k\\ud800']`) of the first string, key
    included, that has no UTF-8 form (a lone surrogate); None if there is none.

    Iterative: the decoder already bounds the depth, this walk must not add recursion.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return path
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{path}.{key}" if path and _is_word(key) else (
                    key if _is_word(key) else f"{path}[{key!a}]")
                if not _encodable(key):
                    return name
                stack.append((sub, name))
        elif isinstance(item, list):
            stack.extend((sub, f"{path}[{i}]") for i, sub in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_word(key: str) -> bool:
    return key.isidentifier() and key.isascii()


class _Connection(asyncio.Protocol):
    """One client: buffers its bytes, enforces the limits, answers its requests in order."""

    def __init__(self, service: VarlinkService) -> None:
        self._service = service
        self._limits = service.limits
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        # Complete requests in arrival order; None marks the client's end of sending.
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False
        self._streaming = False
        self._request_started = 0.0
        self._closed = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.peer = Peer(0, -1, -1)
        self.privileged = False
        self._bucket: TokenBucket | None = None  # unprivileged peers' request rate

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        service = self._service
        sock = transport.get_extra_info("socket")
        try:
            self.peer = peer_credentials(sock)
        except OSError:
            self.close("no-credentials")
            return
        self.privileged = service.is_privileged(self.peer)
        refusal = service._admit(self)
        if refusal is not None:
            # Said before closing (the client reads it even if it sent first), so the
            # client can tell its user why instead of "Connection reset by peer"; said a
            # while later, so a client reconnecting in a loop costs the daemon little.
            message = {"error": service._too_many_connections,
                       "parameters": {"limit": refusal.limit, "reason": refusal.reason}}
            if service.delayed_refusals < MAX_DELAYED_REFUSALS:
                service.delayed_refusals += 1
                self._closed = True  # nothing it sends is read
                transport.pause_reading()
                asyncio.get_running_loop().call_later(self._limits.refusal_delay, self._refuse,
                                                      message)
            else:
                self._send(message)
                self.close("too-many-connections")
            return
        loop = asyncio.get_running_loop()
        if not self.privileged:
            self._bucket = TokenBucket(self._limits.request_rate, self._limits.request_burst,
                                       loop.time())
        tasks = service._tasks
        if tasks is None:  # the server is stopping
            self.close("server-stopping")
            return
        self._worker = tasks.create_task(self._serve_guarded())
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        now = asyncio.get_running_loop().time()
        if not self._buffer:
            self._request_started = now
        self._buffer += data
        while True:
            end = self._buffer.find(b"\0")
            if end < 0:
                break
            if end > self._limits.max_request_bytes:
                self._too_large()
                return
            self._queue.put_nowait(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
            # Whatever follows began in this chunk: its deadline counts from now.
            self._request_started = now
        if len(self._buffer) > self._limits.max_request_bytes:
            self._too_large()
            return
        if self._queue.qsize() >= self._limits.max_queued_requests and self._transport:
            self._transport.pause_reading()  # a pipelining flood waits in the kernel
        self._arm()

    def eof_received(self) -> bool | None:
        if self._streaming:
            # Nothing tells a half-close from a hang-up, and a stream may stay silent for
            # hours: a client that stops sending during a `more` call has gone.
            self.close("client-done")
            return None
        # The client finished sending; answer what is queued, then close (half-close is fine).
        self._queue.put_nowait(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        if self._worker is not None:
            self._worker.cancel()
        self._service._forget(self)

    # limits

    def _arm(self) -> None:
        """Set the deadline that fits the state: none while busy, request or idle timeout."""
        self._disarm()
        if self._closed or self._busy or not self._queue.empty():
            return
        loop = asyncio.get_running_loop()
        if self._buffer:
            # Counted from the request's first byte, so trickling bytes cannot extend it.
            self._deadline = loop.call_at(self._request_started + self._limits.request_timeout,
                                          self.close, "request-timeout")
        else:
            self._deadline = loop.call_later(self._limits.idle_timeout, self.close, "idle-timeout")

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, message: Mapping[str, Any]) -> None:
        """Tell a refused connection why and close it (`refusal_delay` after it came)."""
        service = self._service
        service.delayed_refusals -= 1
        service._stats.disconnects["too-many-connections"] += 1
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # What the client sent meanwhile is read and dropped first: closing a socket with
        # unread data resets the connection, and the client might lose the reply to it.
        fd = transport.get_extra_info("socket").fileno()
        with contextlib.suppress(OSError):  # BlockingIOError: nothing (more) to read
            for _ in range(DRAIN_READS):
                if not os.read(fd, 65536):
                    break
        transport.write(_encode(message))
        transport.close()

    def _too_large(self) -> None:
        self._service._stats.errors["request-too-large"] += 1
        self._send({"error": self._service._errors.request_too_large,
                    "parameters": {"limit": self._limits.max_request_bytes}})
        self.close("request-too-large")

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._service._stats.disconnects[reason] += 1
        self._disarm()
        if self._transport is not None:
            self._transport.close()

    def _send(self, message: Mapping[str, Any]) -> None:
        if self._closed or self._transport is None:
            return
        self._transport.write(_encode(message))
        if self._transport.get_write_buffer_size() > self._limits.max_pending_reply_bytes:
            # The client is not reading its replies: do not hold its backlog in memory.
            self._closed = True
            self._service._stats.disconnects["not-reading"] += 1
            self._transport.abort()

    # requests

    def pause_writing(self) -> None:
        self._writable.clear()  # the transport holds more than its high-water mark

    def resume_writing(self) -> None:
        self._writable.set()

    async def _serve_guarded(self) -> None:
        """`_serve`, whose failure costs its one connection, never its task group."""
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._service._stats.errors["internal-error"] += 1
            if self._service._on_internal_error is not None:
                self._service._on_internal_error("(connection)", e)
            self.close("internal-error")

    async def _serve(self) -> None:
        while not self._closed:
            # A client that does not read its replies gets no new ones: what it costs the
            # daemon stays one reply (and the transport's high-water mark), however much
            # it asks; one that reads none for the idle timeout is closed.
            if not self._writable.is_set():
                try:
                    async with asyncio.timeout(self._limits.idle_timeout):
                        await self._writable.wait()
                except TimeoutError:
                    self.close("not-reading")
                    return
            raw = await self._queue.get()
            if self._transport and self._queue.qsize() < self._limits.max_queued_requests:
                self._transport.resume_reading()
            if raw is None:
                self.close("client-done")
                return
            self._busy = True
            self._disarm()
            try:
                await self._handle(raw)
            finally:
                self._busy = False
                self._arm()

    async def _handle(self, raw: bytes) -> None:
        service = self._service
        errors = service._errors
        try:
            message = decode_request(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError too
            service._stats.errors["invalid-json"] += 1
            self._send({"error": errors.invalid_request,
                        "parameters": {"reason": f"not JSON: {e}"[:200]}})
            return
        problem = _request_problem(message)
        if problem is not None:
            service._stats.errors["invalid-request"] += 1
            self._send({"error": errors.invalid_request, "parameters": {"reason": problem}})
            return
        oneway = bool(message.get("oneway"))
        if self._bucket is not None:
            wait = self._bucket.delay(asyncio.get_running_loop().time())
            if wait > 0.0:
                service._stats.rate_limited += 1
                limits = self._limits
                service._refused(self.peer, (
                    f"more than {limits.request_burst} requests at once or "
                    f"{limits.request_rate} a second on one connection: slowed down"))
                await asyncio.sleep(wait)
                if self._closed:
                    return
        where = unencodable(message.get("parameters") or {})
        if where is not None:
            service._stats.errors["invalid-parameter"] += 1
            if not oneway:
                self._send({"error": f"{SERVICE_INTERFACE}.InvalidParameter",
                            "parameters": {"parameter": where}})
            return
        service._stats.requests += 1
        self._streaming = bool(message.get("more"))
        try:
            async for reply in service.dispatch(message, self.peer):
                if not oneway:
                    out: dict[str, Any] = {"parameters": dict(reply.parameters)}
                    if reply.continues:
                        out["continues"] = True
                    self._send(out)
                if self._closed:
                    return
        except VarlinkError as e:
            service._stats.errors[e.name] += 1
            if not oneway:
                self._send({"error": e.name, "parameters": e.parameters})
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a handler bug must cost one reply, never the daemon
            error = service.internal_error(message["method"], e)
            service._stats.errors[error.name] += 1
            if not oneway:
                self._send({"error": error.name, "parameters": error.parameters})
        finally:
            self._streaming = False


#: Top-level request keys and the JSON type each must have.
_REQUEST_KEYS: Mapping[str, type | tuple[type, ...]] = {
    "method": str,
    "parameters": dict,
    "oneway": bool,
    "more": bool,
    "upgrade": bool,
}


def _request_problem(message: object) -> str | None:
    if not isinstance(message, dict):
        return "a request must be a JSON object"
    for key, value in message.items():
        expected = _REQUEST_KEYS.get(key)
        if expected is None:
            return f"unknown request field {key!r}"
        if not isinstance(value, expected):
            return f"request field {key!r} has the wrong type"
    if "method" not in message:
        return "a request needs a method"
    if not _encodable(message["method"]):
        return "the method name is not valid Unicode (a lone surrogate)"
    if "." not in message["method"]:
        return "a method name is interface.Method"
    if message.get("upgrade"):
        return "protocol upgrades are not supported"
    if message.get("oneway") and message.get("more"):
        return "oneway and more exclude each other"
    return None
