"""The kernel's own module requests on the real kernel, with systemd as PID 1 and kmodd
started from its unit: a socket of an unloaded family makes the kernel run modprobe for
`net-pf-38` (af_alg), which kmodd records with the process that opened the socket; under
`autoload_deny=net-pf-30` the kernel's request for TIPC is refused and logged at notice; and
`kmodctl why` answers for every live module, those loaded before kmodd included (the boot's
trace: `trace_event=module:module_load,module:module_request`); and the boot's timeline,
`kmodctl plot`, is an SVG with one row per module kmodd loaded.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from kmodd.core.autoload.messages import MESSAGE_IDS, Message
from tests.e2e.e2e_support import skip_kmodd_without_unit
from tests.e2e.vm import devices, image, manager
from tests.e2e.vm.machine import VM, Init

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOOT_TRACE = "trace_event=module:module_load,module:module_request"
DENY = "kmodd.autoload_deny=net-pf-30"
AF_ALG, AF_TIPC = 38, 30
SOCKET = ("python3 -c 'import socket, sys\n"
          "try:\n    socket.socket({family}, socket.SOCK_SEQPACKET)\n"
          "except OSError as e:\n    sys.exit(e.errno)'")
POLICY = "/run/modprobe.d/kmodd-autoload-policy.conf"


@dataclass(frozen=True, slots=True)
class Boot:
    alg_rc: int
    tipc_rc: int
    live: tuple[str, ...]
    whys: dict[str, str]
    journal: list[dict[str, str]]
    policy: str
    status: dict[str, object]
    instances: str
    plot: str  # `kmodctl plot`: the SVG
    timed: list[dict[str, object]]  # `kmodctl --json plot`: its rows
    modules: list[dict[str, object]]  # `kmodctl --json modules`
    chain: str  # `kmodctl critical-chain`


@pytest.fixture(scope="module")
def boot(guest: image.Guest) -> Boot:
    skip_kmodd_without_unit(guest)
    with VM(devices=devices.none(), guest=guest, name="test-kernel-requests",
            init=Init.SYSTEMD, append=f"{BOOT_TRACE} {DENY}") as vm:
        manager.wait_active(vm, "kmodd.service")
        manager.wait_kmodd_coldplug_done(vm)
        vm.wait_system_running()
        alg = vm.sh(SOCKET.format(family=AF_ALG), check=False).rc
        tipc = vm.sh(SOCKET.format(family=AF_TIPC), check=False).rc
        assert alg is not None and tipc is not None  # (None: the command timed out)
        vm.sh("sleep 2")  # the trace pipe is read when poll says so: give it a moment
        live = tuple(sorted(vm.sh("cut -d' ' -f1 /proc/modules").out.split()))
        out = vm.sh("for m in $(cut -d' ' -f1 /proc/modules); do kmodctl why $m; done",
                    timeout=600).out
        whys = {line.split(" ", 1)[0]: line for line in out.splitlines()
                if " is live: " in line}
        ids = {MESSAGE_IDS[m] for m in (Message.KERNEL_REQUEST, Message.KERNEL_REQUEST_REFUSED,
                                        Message.TRACE_UNAVAILABLE)}
        journal = [json.loads(line) for line in vm.sh(
            "journalctl -o json SYSLOG_IDENTIFIER=kmodd").out.splitlines()]
        status = json.loads(vm.sh("kmodctl status --json").out)["status"]
        instances = vm.sh("ls /sys/kernel/tracing/instances").out.strip()
        plot = vm.sh("kmodctl plot -o /tmp/coldplug.svg && cat /tmp/coldplug.svg").out
        timed = json.loads(vm.sh("kmodctl --json plot").out)
        modules = json.loads(vm.sh("kmodctl --json modules").out)
        chain = vm.sh("kmodctl critical-chain").out
        print(chain)
        return Boot(alg, tipc, live, whys,
                    [r for r in journal if r.get("MESSAGE_ID") in ids],
                    vm.sh(f"cat {POLICY}").out, status, instances, plot, timed,
                    modules["modules"] if isinstance(modules, dict) else modules, chain)


def test_the_allowed_request_loads_and_is_recorded_with_the_process(boot: Boot) -> None:
    assert boot.alg_rc == 0
    assert "af_alg" in boot.live
    loaded = [r for r in boot.journal if r.get("KMODD_MODULE") == "af_alg"]
    assert [r["MESSAGE"].split(" (pid ")[0] for r in loaded] == [
        "Module af_alg loaded: requested by the kernel for `python3`"]
    assert (loaded[0]["KMODD_ALIAS"], loaded[0]["KMODD_REQUESTER_COMM"],
            loaded[0]["PRIORITY"]) == ("net-pf-38", "python3", "6")
    pid = loaded[0]["KMODD_REQUESTER_PID"]
    assert boot.whys["af_alg"] == (f"af_alg is live: requested by the kernel for `python3` "
                                   f"(pid {pid}): net-pf-38")


def test_the_denied_request_is_refused_and_logged_at_notice(boot: Boot) -> None:
    assert boot.tipc_rc == 97  # EAFNOSUPPORT: modprobe ran /bin/false
    assert "tipc" not in boot.live
    assert [line for line in boot.policy.splitlines() if not line.startswith("#")] == [
        "install net-pf-30 /bin/false"]
    (refused,) = [r for r in boot.journal
                  if r["MESSAGE_ID"] == MESSAGE_IDS[Message.KERNEL_REQUEST_REFUSED]]
    pid = refused["KMODD_REQUESTER_PID"]
    assert (refused["MESSAGE"], refused["PRIORITY"]) == (
        f"Refused the kernel's request for net-pf-30 from `python3` (pid {pid}): denied by "
        "the autoload policy", "5")


def test_kernel_requests_are_recorded_through_kmodds_own_instance(boot: Boot) -> None:
    assert boot.instances == "kmodd"
    assert str(boot.status["kernel_requests"]).startswith(
        "recorded through /sys/kernel/tracing/instances/kmodd: ")
    assert [r for r in boot.journal
            if r["MESSAGE_ID"] == MESSAGE_IDS[Message.TRACE_UNAVAILABLE]] == []


def test_why_answers_for_every_live_module(boot: Boot) -> None:
    assert sorted(boot.whys) == list(boot.live)
    unexplained = {m: w for m, w in boot.whys.items()
                   if w.endswith("(the initramfs, the kernel's own request or another program)")
                   or w.endswith("not known")}
    assert unexplained == {}
    # systemd's own loads before kmodd, named from the boot's trace
    assert boot.whys["autofs4"] == ("autofs4 is live: live before kmodd started: loaded by "
                                    "`systemd` (pid 1)")


def test_the_boots_plot_has_one_row_per_module_kmodd_loaded(boot: Boot) -> None:
    svg = ET.fromstring(boot.plot)
    labels = [str(g.get("data-label")) for g in svg.iter("{http://www.w3.org/2000/svg}g")
              if g.get("class", "").split()[:1] == ["row"]]
    timed = [str(r["module"]) for r in boot.timed]
    # One row per module kmodd tried (an insert whose init failed has its row too), each once.
    assert sorted(labels) == sorted(timed) == sorted(set(timed))
    inserted = {str(m["name"]) for m in boot.modules if m.get("loaded_by") == "kmodd"}
    assert inserted and inserted <= set(labels)
    # The critical chain is outlined on the plot and printed by critical-chain, from the
    # module that went live last.
    assert [r for r in boot.timed if r["critical"]]
    last = max(boot.timed, key=lambda r: int(str(r["finished_usec"])))
    assert boot.chain.splitlines()[3].startswith(f"{last['module']} @")
