"""A blocking Varlink client for kmodd's control socket (what `kmodctl` talks through).

Messages are JSON objects ended by a NUL byte; a reply with `error` becomes a
`VarlinkClientError`; a `more` call yields replies until one does not continue.

A service that refuses a connection (too many open) says why and closes: whether that
reaches us as a failed send (EPIPE) or a reset after the reply, the reply it sent is read
and raised, and a connection closed or reset without one is a `ServiceClosed` in words.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any

#: Seconds a call waits for its reply by default.
DEFAULT_TIMEOUT = 30.0
#: Seconds to wait for the reply a service sent before it closed on us, after a failed send.
PARTING_REPLY_TIMEOUT = 1.0


class ServiceClosed(ConnectionError):
    """The service closed (or reset) the connection without a reply."""

    def __init__(self, how: str = "closed") -> None:
        super().__init__(f"the daemon {how} the connection without a reply (it may have "
                         "refused the connection or stopped; its log says why)")


class VarlinkClientError(Exception):
    """An error reply: its name and parameters."""

    def __init__(self, name: str, parameters: Mapping[str, Any]) -> None:
        super().__init__(f"{name} {json.dumps(dict(parameters))}")
        self.name = name
        self.parameters = dict(parameters)


class VarlinkClient:
    """Blocking Varlink client over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except BaseException:
            self._sock.close()
            raise
        self._buffer = bytearray()

    def send(self, message: Mapping[str, Any]) -> None:
        """Send one message; if the service has closed on us, raise what it said first."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\0"
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self._sock.settimeout(PARTING_REPLY_TIMEOUT)
            try:
                parting = self.receive()
            except (OSError, ValueError):
                raise ServiceClosed() from None
            _parameters(parting)  # an error reply (why it refused us) raises here
            raise ServiceClosed() from None

    def receive(self) -> dict[str, Any]:
        while True:
            end = self._buffer.find(b"\0")
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                reply: dict[str, Any] = json.loads(raw)
                return reply
            try:
                chunk = self._sock.recv(65536)
            except ConnectionResetError:
                raise ServiceClosed("reset") from None
            if not chunk:
                raise ServiceClosed()
            self._buffer += chunk

    def call(self, method: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One call, one reply; an error reply raises VarlinkClientError."""
        self.send({"method": method, "parameters": dict(parameters or {})})
        return _parameters(self.receive())

    def stream(
        self, method: str, parameters: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """A `more` call: each reply's parameters, until one does not continue."""
        self.send({"method": method, "parameters": dict(parameters or {}), "more": True})
        while True:
            reply = self.receive()
            yield _parameters(reply)
            if not reply.get("continues"):
                return

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> VarlinkClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _parameters(reply: Mapping[str, Any]) -> dict[str, Any]:
    if "error" in reply:
        raise VarlinkClientError(str(reply["error"]), reply.get("parameters") or {})
    result: dict[str, Any] = dict(reply.get("parameters") or {})
    return result
