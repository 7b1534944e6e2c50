"""daemon.control.interface: io.kmodd over a real socket, as root and as an unprivileged user."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmodd.core.explain.model import to_json
from kmodd.core.settings import defaults
from kmodd.core.varlink_idl import parse_interface
from kmodd.daemon.control.interface import CHANGING_METHODS, IDL, admin_gid, limits_from
from kmodd.daemon.control.views import to_wire
from kmodd.daemon.events import MONITOR_QUEUE, EventHub
from kmodd.daemon.varlink import SERVICE_IDL, Limits
from kmodd.system.control_client import VarlinkClient, VarlinkClientError
from tests.daemon.control_harness import (
    DEVICES,
    PCSPKR,
    VIRTIO_NET,
    FakeState,
    RunningServer,
    event,
    explanation_of,
    seen_of,
    start_control,
)
from tests.runas import RunAs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switches to uid nobody")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="kmodd-control-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def control(socket_dir: Path) -> Iterator[tuple[RunningServer, FakeState, EventHub]]:
    server, state, hub = start_control(str(socket_dir / "io.kmodd"))
    yield server, state, hub
    server.stop()


def _error(path: str, method: str, parameters: dict[str, Any] | None = None
           ) -> tuple[str, dict[str, Any]]:
    with VarlinkClient(path) as client, pytest.raises(VarlinkClientError) as info:
        client.call(method, parameters)
    return info.value.name, info.value.parameters


def test_the_service_describes_itself(control: tuple[RunningServer, FakeState, EventHub]) -> None:
    server, _, _ = control
    with VarlinkClient(server.path) as client:
        info = client.call("org.varlink.service.GetInfo")
        own = client.call("org.varlink.service.GetInterfaceDescription", {"interface": "io.kmodd"})
        std = client.call("org.varlink.service.GetInterfaceDescription",
                          {"interface": "org.varlink.service"})
    assert info == {"vendor": "kmodd", "product": "kmodd", "version": "0.1.0", "url": "",
                    "interfaces": ["org.varlink.service", "io.kmodd"]}
    assert own == {"description": IDL}
    assert std == {"description": SERVICE_IDL}
    assert _error(server.path, "org.varlink.service.GetInterfaceDescription",
                  {"interface": "io.nothing"}) == (
        "org.varlink.service.InterfaceNotFound", {"interface": "io.nothing"})


def test_every_method_of_the_idl_has_a_handler_and_changing_ones_are_named() -> None:
    interface = parse_interface(IDL)
    assert set(interface.methods) == {
        "GetStatus", "ListDevices", "ListModules", "Why", "Explain", "Load", "Unload", "Reload",
        "Monitor",
    }
    assert set(interface.methods) >= CHANGING_METHODS == {"Load", "Unload", "Reload"}


def test_reading_methods_return_the_states_views(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, state, _ = control
    with VarlinkClient(server.path) as client:
        status = client.call("io.kmodd.GetStatus")
        devices = client.call("io.kmodd.ListDevices")
        one = client.call("io.kmodd.ListDevices", {"devpath": PCSPKR})
        modules = client.call("io.kmodd.ListModules", {"name": "virtio_net"})
        why = client.call("io.kmodd.Why", {"target": "platform:pcspkr"})
        explain = client.call("io.kmodd.Explain", {"module": "virtio_net"})
    assert status == {"status": to_wire(state.status()), "statistics": to_wire(state.statistics())}
    assert devices == {"devices": to_wire(DEVICES)}
    assert one["devices"] == [to_wire(DEVICES[1])]
    assert one["devices"][0]["plan"] == [
        {"action": "skip", "module": "pcspkr", "reason": "blacklisted in /etc/modprobe.d/b.conf:1"}
    ]
    assert [m["name"] for m in modules["modules"]] == ["virtio_net"]
    assert why["report"]["summary"] == "pcspkr is not loaded: it is blacklisted"
    assert explain == {"explanation": to_json(explanation_of("virtio_net")),
                       "seen": list(seen_of("virtio_net"))}


def test_explaining_an_unknown_module_is_an_explanation_not_an_error(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    with VarlinkClient(control[0].path) as client:
        reply = client.call("io.kmodd.Explain", {"module": "nope"})
    assert reply == {"explanation": to_json(explanation_of("nope")), "seen": list(seen_of("nope"))}
    assert reply["explanation"]["verdict"] == "problem"


def test_lookups_of_unknown_things_are_named_errors(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    path = control[0].path
    assert _error(path, "io.kmodd.ListDevices", {"devpath": "/devices/none"}) == (
        "io.kmodd.NoSuchDevice", {"devpath": "/devices/none"})
    assert _error(path, "io.kmodd.ListModules", {"name": "nope"}) == (
        "io.kmodd.NoSuchModule", {"module": "nope"})
    assert _error(path, "io.kmodd.Frobnicate") == (
        "org.varlink.service.MethodNotFound", {"method": "io.kmodd.Frobnicate"})
    assert _error(path, "io.other.Method") == (
        "org.varlink.service.InterfaceNotFound", {"interface": "io.other"})


@pytest.mark.parametrize(("method", "parameters", "bad"), [
    ("io.kmodd.Load", {"modules": "virtio_net"}, "modules"),
    ("io.kmodd.Load", {"modules": ["a", 3]}, "modules[1]"),
    ("io.kmodd.Load", {}, "modules"),
    ("io.kmodd.Load", {"modules": ["a"], "dry_run": "yes"}, "dry_run"),
    ("io.kmodd.Load", {"modules": ["a"], "force": True}, "force"),
    ("io.kmodd.Why", {"target": 7}, "target"),
    ("io.kmodd.GetStatus", {"verbose": True}, "verbose"),
])
def test_badly_typed_parameters_are_refused_before_the_handler_runs(
    control: tuple[RunningServer, FakeState, EventHub],
    method: str, parameters: dict[str, Any], bad: str,
) -> None:
    server, state, _ = control
    assert _error(server.path, method, parameters) == (
        "org.varlink.service.InvalidParameter", {"parameter": bad})
    assert state.loads == []


def test_root_may_call_changing_methods(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, state, _ = control
    with VarlinkClient(server.path) as client:
        loaded = client.call("io.kmodd.Load", {"modules": ["virtio_net", "nosuch"],
                                               "dry_run": True})
        unloaded = client.call("io.kmodd.Unload", {"modules": ["pcspkr"]})
        reloaded = client.call("io.kmodd.Reload")
    assert [(r["module"], r["outcome"]) for r in loaded["results"]] == [
        ("virtio_net", "inserted"), ("nosuch", "not-found")]
    assert loaded["results"][1] == {"module": "nosuch", "outcome": "not-found", "errno": 2,
                                    "message": "Module nosuch not found", "plan": []}
    assert unloaded["results"][0]["outcome"] == "removed"
    assert reloaded == {"generation": 2}
    assert state.loads == [(("virtio_net", "nosuch"), True)]
    assert state.unloads == [("pcspkr",)]


def test_a_failed_reload_is_reported_and_the_daemon_keeps_serving(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, state, _ = control
    state.fail_reload = True
    assert _error(server.path, "io.kmodd.Reload") == (
        "io.kmodd.ReloadFailed", {"reason": "modules.dep.bin: bad magic"})
    with VarlinkClient(server.path) as client:
        assert client.call("io.kmodd.GetStatus")["status"]["index_generation"] == 1


def _calls_as_user(path: str) -> str:
    results = {}
    with VarlinkClient(path) as client:
        for method, params in (
            ("io.kmodd.GetStatus", {}),
            ("io.kmodd.ListDevices", {}),
            ("io.kmodd.ListModules", {}),
            ("io.kmodd.Why", {"target": PCSPKR}),
            ("io.kmodd.Explain", {"module": "virtio_net"}),
            ("io.kmodd.Load", {"modules": ["virtio_net"]}),
            ("io.kmodd.Unload", {"modules": ["virtio_net"]}),
            ("io.kmodd.Reload", {}),
        ):
            try:
                client.call(method, params)
                results[method] = "ok"
            except VarlinkClientError as e:
                results[method] = e.name
    return json.dumps(results)


def test_an_unprivileged_user_reads_but_every_changing_method_is_refused(
    control: tuple[RunningServer, FakeState, EventHub], as_nobody: RunAs,
) -> None:
    server, state, _ = control
    results = json.loads(as_nobody(lambda: _calls_as_user(server.path)))
    assert results == {
        "io.kmodd.GetStatus": "ok",
        "io.kmodd.ListDevices": "ok",
        "io.kmodd.ListModules": "ok",
        "io.kmodd.Why": "ok",
        "io.kmodd.Explain": "ok",
        "io.kmodd.Load": "org.varlink.service.PermissionDenied",
        "io.kmodd.Unload": "org.varlink.service.PermissionDenied",
        "io.kmodd.Reload": "org.varlink.service.PermissionDenied",
    }
    assert (state.loads, state.unloads, state.generation) == ([], [], 1)


def test_a_member_of_the_admin_group_may_change(socket_dir: Path, as_nobody: RunAs) -> None:
    admin = 4242
    server, state, _ = start_control(str(socket_dir / "io.kmodd"), admin_group=str(admin))
    try:
        nogroup = pwd.getpwnam("nobody").pw_gid
        as_member = json.loads(as_nobody(lambda: _calls_as_user(server.path), groups=[admin]))
        as_outsider = json.loads(as_nobody(lambda: _calls_as_user(server.path),
                                           groups=[nogroup]))
    finally:
        server.stop()
    assert as_member["io.kmodd.Load"] == "ok"
    assert as_member["io.kmodd.Reload"] == "ok"
    assert as_outsider["io.kmodd.Load"] == "org.varlink.service.PermissionDenied"
    assert state.loads == [(("virtio_net",), False)]


def test_monitor_needs_more_and_streams_published_events(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, _, hub = control
    assert _error(server.path, "io.kmodd.Monitor") == ("org.varlink.service.ExpectedMore", {})
    with VarlinkClient(server.path, timeout=5) as client:
        client.send({"method": "io.kmodd.Monitor", "more": True})
        _wait_for_subscriber(hub)
        for n in range(3):
            server.call_in_loop(hub.publish, event(n))
        replies = [client.receive() for _ in range(3)]
    assert replies == [{"parameters": {"event": to_wire(event(n))}, "continues": True}
                       for n in range(3)]
    # A monitor that hangs up is unsubscribed.
    deadline = time.monotonic() + 5
    while hub.subscribers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.subscribers == 0


def test_a_monitor_that_falls_behind_is_ended_with_the_count_it_lost(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, _, hub = control
    extra = 100
    with VarlinkClient(server.path, timeout=5) as client:
        client.send({"method": "io.kmodd.Monitor", "more": True})
        _wait_for_subscriber(hub)

        def burst() -> None:  # all in one loop callback: the sender gets no turn in between
            for n in range(MONITOR_QUEUE + extra):
                hub.publish(event(n))

        server.call_in_loop(burst)
        replies = [client.receive() for _ in range(MONITOR_QUEUE + 1)]
    assert all(r.get("continues") for r in replies[:MONITOR_QUEUE])
    assert replies[MONITOR_QUEUE] == {"error": "io.kmodd.MonitorOverrun",
                                      "parameters": {"lost": extra}}


def _wait_for_subscriber(hub: EventHub) -> None:
    deadline = time.monotonic() + 5
    while hub.subscribers == 0:
        assert time.monotonic() < deadline, "Monitor never subscribed"
        time.sleep(0.01)


def test_a_oneway_call_runs_without_a_reply(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, state, _ = control
    with VarlinkClient(server.path) as client:
        client.send({"method": "io.kmodd.Reload", "oneway": True})
        assert client.call("io.kmodd.GetStatus")["status"]["index_generation"] == 2
    assert state.generation == 2


def test_the_reference_python_varlink_client_reads_our_interface(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    varlink = pytest.importorskip("varlink")
    server, _state, _ = control
    with varlink.Client(address=f"unix:{server.path}") as client, \
            client.open("io.kmodd", namespaced=True) as kmodd:
        status = kmodd.GetStatus()
        devices = kmodd.ListDevices(VIRTIO_NET)
    assert status.status.state == "running"
    assert status.statistics.outcomes == {"inserted": 2, "blacklisted": 1}
    assert [d.devpath for d in devices.devices] == [VIRTIO_NET]
    assert devices.devices[0].plan[1].module == "virtio_net"


def test_the_socket_file_is_open_to_everyone(
    control: tuple[RunningServer, FakeState, EventHub],
) -> None:
    mode = os.stat(control[0].path).st_mode
    assert mode & 0o777 == 0o666


def test_the_limits_come_from_the_settings() -> None:
    settings = dataclasses.replace(defaults(), control_max_request=2048,
                                   control_max_connections=3, control_idle_timeout=5.0,
                                   control_request_timeout=1.5)
    assert limits_from(settings) == Limits(max_request_bytes=2048, max_connections=3,
                                           idle_timeout=5.0, request_timeout=1.5)


def test_the_admin_group_is_a_name_or_a_number() -> None:
    assert admin_gid("") is None
    assert admin_gid("4242") == 4242
    assert admin_gid("root") == 0
    assert admin_gid("no-such-group-here") is None
