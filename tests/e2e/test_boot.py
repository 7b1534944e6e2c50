"""The guest boots the real Debian kernel with nothing loaded and the agent answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.vm import devices, image
from tests.e2e.vm.machine import VM

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vm(guest: image.Guest) -> Iterator[VM]:
    with VM(devices=devices.none(), guest=guest, name="test-boot") as v:
        yield v


def test_guest_runs_the_debian_kernel_the_image_was_built_from(vm: VM, guest: image.Guest) -> None:
    assert vm.sh("uname -r").out.strip() == guest.base.kver == vm.boot_info["kernel"]


def test_no_module_is_loaded_when_init_starts(vm: VM) -> None:
    assert vm.boot_info["modules_at_init"] == []


def test_no_udevd_and_no_module_loader_runs_unless_a_test_starts_one(vm: VM) -> None:
    assert vm.sh("pgrep -x systemd-udevd", check=False).rc == 1
    assert vm.sh("ps -eo args | grep '[k]modd'", check=False).rc == 1


def test_guest_has_all_modules_indexed_by_its_own_depmod(vm: VM, guest: image.Guest) -> None:
    kver = guest.base.kver
    count = vm.sh(f"find /usr/lib/modules/{kver} -name '*.ko*' | wc -l").out.strip()
    assert int(count) == guest.base.manifest["modules"]
    assert vm.sh("modprobe -n -v e1000").out.strip().endswith("e1000.ko")


def test_guest_python_is_debians_with_the_runtime_dependencies(vm: VM) -> None:
    out = vm.sh("python3 -c 'import sys, zstandard, systemd.journal; "
                "print(sys.version.split()[0])'").out.strip()
    assert out == "3.11.2"


def test_kmodd_is_installed_from_the_checkout(vm: VM, guest: image.Guest) -> None:
    r = vm.sh("python3 -c 'import kmodd; print(kmodd.__file__)'", check=False)
    if guest.overlay.has_kmodd:
        assert r.out.strip() == f"/{image.GUEST_SITE}/kmodd/__init__.py"
    else:
        assert r.rc != 0


def test_agent_round_trips_files_byte_for_byte(vm: VM) -> None:
    payload = bytes(range(256)) * 64
    vm.put("/tmp/roundtrip.bin", payload, mode=0o600)
    assert vm.get("/tmp/roundtrip.bin") == payload
    assert vm.sh("stat -c %a /tmp/roundtrip.bin").out.strip() == "600"


def test_agent_reports_a_failing_command_with_its_exit_code_and_stderr(vm: VM) -> None:
    r = vm.sh("echo oops >&2; exit 3", check=False)
    assert (r.rc, r.err) == (3, "oops\n")


def test_wait_path_sees_a_file_appear(vm: VM) -> None:
    vm.sh("(sleep 0.3; touch /tmp/appears) >/dev/null 2>&1 &")
    times = vm.wait_path(["/tmp/appears"], timeout=10)
    assert list(times) == ["/tmp/appears"]


def test_kernel_uevents_stream_to_the_host(vm: VM) -> None:
    since = vm.uevents_start(stream=True)
    vm.sh("echo change > /sys/devices/virtual/mem/null/uevent")
    hit = vm.wait_uevent(lambda ev: ev["action"] == "change"
                         and ev["devpath"] == "/devices/virtual/mem/null", timeout=10, since=since)
    assert hit is not None
    assert hit[1]["env"]["DEVNAME"] == "null"


def test_qmp_answers_with_the_pci_devices_of_the_board(vm: VM) -> None:
    ids = {(d["id"]["vendor"], d["id"]["device"]) for bus in vm.qmp("query-pci")
           for d in bus["devices"]}
    # i440FX host bridge, PIIX3 ISA bridge, std VGA
    assert {(0x8086, 0x1237), (0x8086, 0x7000), (0x1234, 0x1111)} <= ids


def test_journald_runs_standalone_and_records_what_python_sends(vm: VM) -> None:
    vm.start_journald()
    vm.sh("python3 -c 'from systemd import journal; journal.send(\"e2e-journal-probe\")'")
    out = vm.sh("journalctl --no-pager -o cat MESSAGE=e2e-journal-probe").out
    assert out.strip() == "e2e-journal-probe"
