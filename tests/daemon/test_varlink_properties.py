"""Properties of daemon.varlink's framing and request decoding, for any bytes a client sends.

Whatever a client sends, cut into whatever chunks: every complete (NUL-terminated) request
gets exactly one reply, that reply is JSON, and the server goes on answering the same
connection and new ones. Requests are drawn from arbitrary bytes, arbitrary JSON (lone
surrogates, integers too long for Python's decoder, deep nesting included) and
request-shaped objects with arbitrary parameters.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodd.daemon.varlink import Limits
from tests.daemon.control_harness import RunningServer, start_control

LIMITS = Limits(max_request_bytes=16 * 1024, idle_timeout=30.0, request_timeout=30.0)
#: Methods whose calls are answered once (Monitor streams; it is left out on purpose).
METHODS = ("io.kmodd.GetStatus", "io.kmodd.ListDevices", "io.kmodd.ListModules",
           "io.kmodd.Why", "io.kmodd.Explain", "io.kmodd.Load", "io.kmodd.Unload",
           "io.kmodd.Reload", "io.kmodd.Nope", "org.varlink.service.GetInfo",
           "org.varlink.service.GetInterfaceDescription", "no.such.Interface")
STATUS = b'{"method":"io.kmodd.GetStatus"}\0'
#: Characters including lone surrogates (category Cs), which json.dumps escapes.
ANY_CHAR = st.one_of(st.characters(), st.characters(codec=None, categories=["Cs"]))
TEXT = st.text(ANY_CHAR, max_size=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = tmp_path_factory.mktemp("varlink") / "io.kmodd"
    running, _, _ = start_control(str(path), limits=LIMITS)
    yield running
    running.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII: surrogates become \ud800 escapes


requests = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\0", b"")),
    json_values.map(_dumps),
    st.builds(lambda m, p: _dumps({"method": m, "parameters": p}),
              st.sampled_from(METHODS), st.dictionaries(TEXT, json_values, max_size=3)),
    st.builds(lambda m, k, v: _dumps({"method": m, "parameters": {k: v}}),
              st.sampled_from(METHODS),
              st.sampled_from(("target", "module", "name", "devpath", "modules", "interface")),
              json_values),
    # Integers beyond Python's 4300-digit conversion limit, where a value is expected.
    st.builds(lambda m, n: b'{"method":"' + m.encode() + b'","parameters":{"target":'
              + b"7" * n + b"}}", st.sampled_from(METHODS), st.integers(4000, 6000)),
    # Deeper than the decoder recurses, or just deep.
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from((b"NaN", b"-Infinity", b'{"method":"io.kmodd.Why","parameters":'
                     b'{"target":NaN}}', b'{"method":"io.kmodd.Why\\ud800"}',
                     b'{"method":"io.kmodd.Why","parameters":{"\\udfff":1}}')),
)


def _is_reply(reply: Any) -> bool:
    """A Varlink reply: an error name with parameters, or parameters alone."""
    if not isinstance(reply, dict) or not isinstance(reply.get("parameters", {}), dict):
        return False
    return isinstance(reply["error"], str) if "error" in reply else "parameters" in reply


def _chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points) if b > a]


def _replies(sock: socket.socket, count: int) -> list[bytes]:
    data, out = b"", list[bytes]()
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(out)} of {count} replies"
        data += chunk
        while b"\0" in data and len(out) < count:
            message, _, data = data.partition(b"\0")
            out.append(message)
    assert data == b"", "more replies than requests"
    return out


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(requests, min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 1 << 16), max_size=8))
def test_every_complete_request_gets_one_json_reply_and_the_server_goes_on(
        server: RunningServer, batch: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(r + b"\0" for r in batch) + STATUS
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(server.path)
        for chunk in _chunks(stream, cuts):
            sock.sendall(chunk)
        replies = [json.loads(r) for r in _replies(sock, len(batch) + 1)]
    for request, reply in zip(batch, replies[:-1], strict=True):
        assert _is_reply(reply), (request[:80], reply)
    # No request, however hostile, reached a handler's failure path.
    assert server.service.statistics().errors["io.kmodd.InternalError"] == 0
    # The request after them all is answered in order: none had more than one reply.
    assert replies[-1]["parameters"]["status"]["state"] == "running"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fresh:
        fresh.settimeout(10)
        fresh.connect(server.path)
        fresh.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
        assert json.loads(_replies(fresh, 1)[0])["parameters"]["product"] == "kmodd"


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=1, max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_bytes_with_their_nuls_split_anywhere_get_one_reply_per_nul(
        server: RunningServer, junk: bytes, cuts: list[int]) -> None:
    stream = junk + b"\0" + STATUS
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(server.path)
        for chunk in _chunks(stream, cuts):
            sock.sendall(chunk)
        replies = [json.loads(r) for r in _replies(sock, stream.count(b"\0"))]
    assert all("error" in r for r in replies[:-1])
    assert replies[-1]["parameters"]["status"]["state"] == "running"

