"""kmodctl's daemon commands against a real io.kmodd server with a fake state."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import kmodd
from kmodd.cli.client import EXIT_NOT_RUNNING, EXIT_PERMISSION, EXIT_USAGE
from kmodd.cli.kmodctl import dispatch
from kmodd.cli.timeline import format_usec
from kmodd.daemon.control.views import to_wire
from kmodd.daemon.events import EventHub
from kmodd.system.root import Root
from tests.daemon.control_harness import (
    PCSPKR,
    VIRTIO_NET,
    FakeState,
    RunningServer,
    event,
    start_control,
)
from tests.runas import RunAs


@pytest.fixture
def daemon() -> Iterator[tuple[RunningServer, FakeState, EventHub]]:
    directory = Path(tempfile.mkdtemp(prefix="kmodctl-"))
    directory.chmod(0o755)
    server, state, hub = start_control(str(directory / "io.kmodd"))
    yield server, state, hub
    server.stop()
    shutil.rmtree(directory)


def kmodctl(path: str, *args: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    code = dispatch(["kmodctl", *args], root=Root(), stdout=out, stderr=err,
                    environ={"KMODD_SOCKET": path})
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_status_is_a_readable_summary(daemon: tuple[RunningServer, FakeState, EventHub]) -> None:
    code, out, err = kmodctl(daemon[0].path, "status")
    assert (code, err) == (0, "")
    assert out == (
        "           State: running\n"
        "         Version: 0.1.0\n"
        f"             PID: {os.getpid()}\n"
        "          Kernel: 6.1.0-test\n"
        "          Uptime: 5.000s\n"
        "     Ready after: 180ms\n"
        "        Coldplug: done\n"
        "Index generation: 1\n"
        "         Uevents: 120 received, 117 accepted, 3 dropped\n"
        "    Lost/resyncs: 0 overruns, 0 resyncs\n"
        "         Devices: 3\n"
        "        Outcomes: blacklisted 1, inserted 2\n"
        "           Queue: 0\n"
        "     Connections: 1\n"
    )


def test_devices_and_modules_are_tables(daemon: tuple[RunningServer, FakeState, EventHub]) -> None:
    path = daemon[0].path
    assert kmodctl(path, "devices") == (0, (
        "DEVPATH                                   MODALIAS                   MODULES     "
        "OUTCOME      TIME\n"
        "/devices/pci0000:00/0000:00:03.0/virtio2  virtio:d00000001v00001AF4  virtio_net  "
        "inserted     8ms\n"
        "/devices/platform/pcspkr                  platform:pcspkr            pcspkr      "
        "blacklisted  50us\n"
        "/devices/platform/serial8250              platform:serial8250        -           "
        "-            -\n"
    ), "")
    assert kmodctl(path, "modules") == (0, (
        "MODULE        STATE       OUTCOME      TIME  DEVICES  LOADED BY\n"
        "virtio_net    live        inserted     8ms   1        kmodd\n"
        "net_failover  live        inserted     2ms   1        kmodd (pid 377)\n"
        "pcspkr        not-loaded  blacklisted  50us  1        -\n"
    ), "")


def test_one_device_shows_its_details_and_plan(
    daemon: tuple[RunningServer, FakeState, EventHub],
) -> None:
    code, out, _ = kmodctl(daemon[0].path, "devices", VIRTIO_NET)
    assert code == 0
    assert out.splitlines()[2:] == [
        "Subsystem: virtio", "Driver: virtio_net", "Vendor: 0x1af4", "Model: 0x0001",
        "  insert net_failover", "  insert virtio_net",
    ]


def test_why_and_explain_say_it_in_words(
    daemon: tuple[RunningServer, FakeState, EventHub],
) -> None:
    path = daemon[0].path
    assert kmodctl(path, "why", PCSPKR) == (0, (
        "Device: /devices/platform/pcspkr\n"
        "Modalias: platform:pcspkr\n"
        "  pcspkr (modules.alias): skipped: blacklisted in /etc/modprobe.d/b.conf:1\n"
        "pcspkr is not loaded: it is blacklisted\n"
    ), "")
    assert kmodctl(path, "explain", "virtio_net") == (0, (
        "(computed by kmodd)\n"
        "virtio_net (module): 0 problems, 0 warnings (kernel 6.1.0-test, /lib/modules/6.1.0-test)\n"
        "\n"
        "[info] plan: modprobe would insert net_failover, virtio_net\n"
        "\n"
        "Seen by kmodd:\n"
        f"    kmodd's last outcome for virtio_net: inserted for {VIRTIO_NET}\n"), "")
    assert kmodctl(path, "why", "/devices/none") == (
        1, "", "kmodctl: why: no such device (devpath=/devices/none)\n")


def test_load_unload_reload_as_root(daemon: tuple[RunningServer, FakeState, EventHub]) -> None:
    path, state = daemon[0].path, daemon[1]
    assert kmodctl(path, "load", "--dry-run", "virtio_net") == (
        0, "virtio_net: inserted: Inserted module 'virtio_net'\n  insert virtio_net\n", "")
    assert kmodctl(path, "load", "nosuch") == (
        1, "nosuch: not-found: Module nosuch not found\n", "")
    assert kmodctl(path, "unload", "pcspkr") == (0, "pcspkr: removed: Removed module 'pcspkr'\n",
                                                 "")
    assert kmodctl(path, "reload") == (0, "Reloaded (generation 2)\n", "")
    assert state.loads == [(("virtio_net",), True), (("nosuch",), False)]


def test_changing_commands_as_a_user_exit_with_permission_denied(
    daemon: tuple[RunningServer, FakeState, EventHub], as_nobody: RunAs,
) -> None:
    path = daemon[0].path

    def as_user() -> str:
        return json.dumps([kmodctl(path, "load", "virtio_net"), kmodctl(path, "reload"),
                           kmodctl(path, "modules", "pcspkr")[0]])

    load, reload, read = json.loads(as_nobody(as_user))
    assert load == [EXIT_PERMISSION, "", "kmodctl: load: permission denied (run as root)\n"]
    assert reload == [EXIT_PERMISSION, "", "kmodctl: reload: permission denied (run as root)\n"]
    assert read == 0
    assert daemon[1].loads == []


@pytest.mark.parametrize("command", [
    ["status"], ["devices"], ["devices", PCSPKR], ["modules"], ["modules", "virtio_net"],
    ["why", PCSPKR], ["explain", "virtio_net"], ["load", "virtio_net"], ["unload", "pcspkr"],
    ["reload"],
])
def test_json_prints_the_daemons_reply(
    daemon: tuple[RunningServer, FakeState, EventHub], command: list[str],
) -> None:
    code, out, err = kmodctl(daemon[0].path, "--json", *command)
    assert (code, err) == (0, "")
    reply = json.loads(out)
    assert isinstance(reply, dict) and reply


def test_json_status_is_exactly_the_reply(
    daemon: tuple[RunningServer, FakeState, EventHub],
) -> None:
    state = daemon[1]
    code, out, _ = kmodctl(daemon[0].path, "status", "--json")
    assert code == 0
    assert json.loads(out) == {"status": to_wire(state.status()),
                               "statistics": to_wire(state.statistics())}


def test_blame_lists_modules_by_load_time(
    daemon: tuple[RunningServer, FakeState, EventHub],
) -> None:
    path = daemon[0].path
    assert kmodctl(path, "blame") == (0, " 8ms virtio_net\n 2ms net_failover\n50us pcspkr\n", "")
    code, out, _ = kmodctl(path, "blame", "--json")
    assert code == 0
    assert json.loads(out) == [{"module": "virtio_net", "duration_usec": 8000},
                               {"module": "net_failover", "duration_usec": 2200},
                               {"module": "pcspkr", "duration_usec": 50}]


SVG = {"s": "http://www.w3.org/2000/svg"}


def test_plot_draws_one_row_per_timed_module_with_the_critical_chain_outlined(
    daemon: tuple[RunningServer, FakeState, EventHub], tmp_path: Path,
) -> None:
    target = tmp_path / "coldplug.svg"
    assert kmodctl(daemon[0].path, "plot", "-o", str(target)) == (0, "", "")
    svg = ET.parse(target).getroot()
    rows = svg.findall("s:g[@class]", SVG)
    drawn = [(g.get("data-label"), g.get("class")) for g in rows if g.get("data-label")]
    assert drawn == [("pcspkr", "row"), ("net_failover", "row critical"),
                     ("virtio_net", "row critical")]
    assert svg.find("s:text", SVG).text == "kmodd module loads: 3 modules, 8ms"  # type: ignore[union-attr]
    code, out, _ = kmodctl(daemon[0].path, "plot", "--json")
    assert code == 0
    assert [(r["module"], r["after"], r["critical"]) for r in json.loads(out)] == [
        ("pcspkr", None, False), ("net_failover", None, True),
        ("virtio_net", "net_failover", True)]


def test_plot_by_device_draws_one_row_per_timed_device(
    daemon: tuple[RunningServer, FakeState, EventHub], tmp_path: Path,
) -> None:
    target = tmp_path / "coldplug.svg"
    assert kmodctl(daemon[0].path, "plot", "--by-device", "-o", str(target)) == (0, "", "")
    svg = ET.parse(target).getroot()
    titles = [g.find("s:title", SVG).text  # type: ignore[union-attr]
              for g in svg.findall("s:g[@class='row']", SVG)]
    assert titles == [f"{PCSPKR} (pcspkr): 50us", f"{VIRTIO_NET} (virtio_net): 8ms"]
    assert svg.find("s:text", SVG).text == "kmodd coldplug: 2 devices, 8ms"  # type: ignore[union-attr]
    code, out, _ = kmodctl(daemon[0].path, "plot", "--by-device", "--json")
    assert code == 0
    assert [d["devpath"] for d in json.loads(out)] == [VIRTIO_NET, PCSPKR]
    assert kmodctl(daemon[0].path, "blame", "--by-device") == (
        EXIT_USAGE, "", "kmodctl: --by-device goes with plot only\n")


def test_critical_chain_prints_the_waits_that_bounded_the_last_module(
    daemon: tuple[RunningServer, FakeState, EventHub],
) -> None:
    header = ('The time when a module went live (a device: when its uevent was queued) is '
              'printed after the "@" character.\n'
              'The time its insert took (inside finit_module) is printed after the "+" '
              'character.\n\n')
    path = daemon[0].path
    assert kmodctl(path, "critical-chain") == (0, header + (
        "virtio_net @9ms +8ms\n"
        "└─net_failover @3ms +2ms\n"
        f"  └─{VIRTIO_NET} @1ms\n"), "")
    assert kmodctl(path, "critical-chain", "net-failover") == (0, header + (
        "net_failover @3ms +2ms\n"
        f"└─{VIRTIO_NET} @1ms\n"), "")
    code, out, _ = kmodctl(path, "critical-chain", "--json", "net_failover")
    assert code == 0
    assert json.loads(out) == [
        {"name": "net_failover", "kind": "module", "at_usec": 3400, "took_usec": 2200},
        {"name": VIRTIO_NET, "kind": "device", "at_usec": 1000, "took_usec": None}]
    assert kmodctl(path, "critical-chain", "e1000") == (1, "", (
        "kmodctl: critical-chain: kmodd has no timed load of e1000 (it was not loaded by "
        "this kmodd, or not loaded)\n"))


def test_monitor_prints_events_as_they_come(
    daemon: tuple[RunningServer, FakeState, EventHub],
) -> None:
    server, _, hub = daemon
    result: list[tuple[int, str, str]] = []
    thread = threading.Thread(target=lambda: result.append(kmodctl(server.path, "monitor")))
    thread.start()
    deadline = time.monotonic() + 5
    while hub.subscribers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    for n in range(2):
        server.call_in_loop(hub.publish, event(n))
    time.sleep(0.2)
    server.stop()
    thread.join(5)
    code, out, err = result[0]
    assert out == (
        f"    0.001000 inserted   Inserted module 'm0' [{VIRTIO_NET} m0]\n"
        f"    0.001001 inserted   Inserted module 'm1' [{VIRTIO_NET} m1]\n"
    )
    assert code == EXIT_NOT_RUNNING
    assert err.startswith("kmodctl: monitor: lost the connection to kmodd")


def test_a_daemon_that_is_not_running_is_said_plainly(tmp_path: Path) -> None:
    missing = str(tmp_path / "io.kmodd")
    assert kmodctl(missing, "status") == (
        EXIT_NOT_RUNNING, "", f"kmodctl: kmodd is not running (no one listens on {missing})\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(missing)
    stale.close()  # the file stays, nobody listens: ECONNREFUSED
    assert kmodctl(missing, "devices")[0] == EXIT_NOT_RUNNING


def test_the_default_socket_is_under_the_root(tmp_path: Path) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    code = dispatch(["kmodctl", "status"], root=Root(str(tmp_path)), stdout=out, stderr=err,
                    environ={})
    assert code == EXIT_NOT_RUNNING
    assert str(tmp_path / "run/kmodd/io.kmodd") in err.getvalue().decode()


@pytest.mark.parametrize(("args", "message"), [
    ([], "usage: kmodctl"),
    (["frob"], "kmodctl: unknown command 'frob'; see kmodctl --help\n"),
    (["why"], "kmodctl: usage: kmodctl why DEVPATH|MODALIAS\n"),
    (["status", "extra"], "kmodctl: usage: kmodctl status\n"),
    (["--bogus", "status"], "kmodctl: unknown option --bogus\n"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    code, out, err = kmodctl("/nonexistent", *args)
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith(message) or err == message


def test_help_lists_every_command() -> None:
    code, out, _ = kmodctl("/nonexistent", "--help")
    assert code == 0
    for command in ("status", "devices", "modules", "why", "load", "unload", "reload",
                    "explain", "monitor", "blame", "plot", "critical-chain"):
        assert f"\n  {command}" in out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_answered_without_a_daemon(flag: str) -> None:
    assert kmodctl("/nonexistent", flag) == (0, f"kmodctl {kmodd.__version__}\n", "")


def test_timespans_read_like_systemd() -> None:
    assert [format_usec(u) for u in (None, 0, 999, 1000, 92_500, 1_520_000)] == [
        "-", "0us", "999us", "1ms", "92ms", "1.520s"]
