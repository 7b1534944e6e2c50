"""Socket activation end to end: systemd's own activator hands kmodd the control socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kmodd.system.control_client import VarlinkClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SERVER = textwrap.dedent(f"""
    import asyncio, os, socket, sys
    sys.path.insert(0, {str(REPO)!r})
    from tests.daemon.control_harness import FakeState
    from kmodd.daemon.control.interface import build_service
    from kmodd.daemon.events import EventHub
    from kmodd.system.notify import listen_fds
    fds = listen_fds(os.environ)
    assert [f.name for f in fds] == ["control"], fds
    listener = socket.socket(fileno=fds[0].fd)
    service = build_service(FakeState(), EventHub(), version="activated")
    asyncio.run(service.serve(listener))
""")


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_the_control_socket_can_come_from_systemd(tmp_path: Path) -> None:
    path = tmp_path / "io.kmodd"
    activator = subprocess.Popen(
        ["systemd-socket-activate", f"--listen={path}", "--fdname=control",
         sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert activator.poll() is None, activator.communicate()
            assert time.monotonic() < deadline, "the activator never listened"
            time.sleep(0.02)
        # The file appears at bind(), a moment before listen(): retry a refused connect.
        while True:
            try:
                client = VarlinkClient(str(path), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the activator never listened"
                time.sleep(0.02)
        # The first connection starts the service, which finds the socket in LISTEN_FDS.
        with client:
            info = client.call("org.varlink.service.GetInfo")
            status = client.call("io.kmodd.GetStatus")["status"]
    finally:
        activator.terminate()
        activator.wait(5)
    assert info["version"] == "activated"
    assert status["pid"] not in (os.getpid(), 0)
