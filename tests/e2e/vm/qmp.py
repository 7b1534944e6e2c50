"""A small QMP client (QEMU's JSON machine protocol) over a unix socket, stdlib only.

One reader thread splits the stream into command returns (handed to the one waiting caller;
commands are serialised) and asynchronous events (kept with the host time they arrived).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from typing import Any


class QMPError(RuntimeError):
    pass


class QMP:
    def __init__(self, path: str, timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._file = self.sock.makefile("rb")
        self._returns: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._cmd_lock = threading.Lock()
        self.closed = False
        greeting = json.loads(self._file.readline())
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.version = greeting["QMP"]["version"]["qemu"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.execute("qmp_capabilities", timeout=timeout)

    def _read(self) -> None:
        try:
            for line in self._file:
                msg = json.loads(line)
                if "event" in msg:
                    with self._cond:
                        self._events.append((time.monotonic(), msg))
                        self._cond.notify_all()
                else:
                    self._returns.put(msg)
        except (OSError, ValueError):
            pass
        self.closed = True
        self._returns.put({"error": {"class": "Closed", "desc": "QMP connection closed"}})
        with self._cond:
            self._cond.notify_all()

    def execute(self, command: str, timeout: float = 30, **arguments: Any) -> Any:
        """Run one command; return its `return` value or raise QMPError."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        with self._cmd_lock:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            try:
                reply = self._returns.get(timeout=timeout)
            except queue.Empty:
                raise QMPError(f"{command}: no reply within {timeout} s") from None
        if "error" in reply:
            err = reply["error"]
            raise QMPError(f"{command} {arguments}: {err.get('class')}: {err.get('desc')}")
        return reply.get("return")

    def events(self, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        """Events received at or after host monotonic time `since`, with their arrival time."""
        with self._cond:
            return [(t, e) for t, e in self._events if t >= since]

    def wait_event(self, name: str, timeout: float, since: float = 0.0,
                   match: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]] | None:
        """Wait for an event named `name` whose data contains `match`; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, e in self._events:
                    if t >= since and e["event"] == name and all(
                            e.get("data", {}).get(k) == v for k, v in (match or {}).items()):
                        return t, e
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
