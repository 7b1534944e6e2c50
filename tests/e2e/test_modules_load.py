"""modules-load.d on the real kernel, systemd as PID 1: a listed module no device asks for.

The guest's root carries (image.with_state) `/etc/modules-load.d/kmodd-e2e.conf` naming
`dummy` (no device asks for it) and `nlmon`, which `/etc/modprobe.d/kmodd-e2e.conf` deny-lists.
Two boots of that root:

  * `kmodd.modules_load` on the kernel command line: kmodd loads the list (dummy live, loaded
    by kmodd, `kmodctl why dummy` names the file and line, the journal record carries
    KMODD_LISTED_IN), says nlmon is deny-listed at notice with the modprobe.d line, and
    systemd-modules-load.service stands aside (its condition failed);
  * the default: systemd-modules-load.service loads the list and kmodd leaves it alone.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.e2e_support import skip_kmodd_without_unit
from tests.e2e.vm import devices, image, manager
from tests.e2e.vm.machine import VM, Init

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIST = "/etc/modules-load.d/kmodd-e2e.conf"
DENY = "/etc/modprobe.d/kmodd-e2e.conf"
FILES = {LIST: "# kmodd's e2e: modules no device asks for\ndummy\nnlmon\n",
         DENY: "blacklist nlmon\n"}
MODULES_LOAD = "systemd-modules-load.service"


@dataclass(frozen=True)
class Boot:
    modules: frozenset[str]
    loaded_by: dict[str, str]
    modules_load: dict[str, str]  # systemctl show systemd-modules-load.service
    why_dummy: str
    records: list[dict[str, str]]  # kmodd's journal records about dummy and nlmon


def _state(work: Path) -> str:
    """A state part whose archive writes FILES into the guest's root before systemd starts."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for path, text in FILES.items():
            body = text.encode()
            info = tarfile.TarInfo("." + path)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
    return image.state_part(data.getvalue(), b"", 1, str(work / "state-1.cpio"))


def _boot(guest: image.Guest, name: str, append: str) -> Boot:
    with VM(devices=devices.none(), guest=guest, name=name, init=Init.SYSTEMD,
            append=f"{append} {manager.TRACE_MODULE_LOADS}".strip()) as vm:
        manager.wait_active(vm, "kmodd.service")
        manager.wait_kmodd_coldplug_done(vm)
        vm.wait_system_running()
        modules = frozenset(vm.wait_modules_settled(quiet=3.0))
        shown = manager.show(vm, MODULES_LOAD, "ActiveState", "ConditionResult")
        why = vm.sh("kmodctl why dummy", check=False).out
        journal = vm.sh("journalctl --no-pager -b -o json SYSLOG_IDENTIFIER=kmodd "
                        "KMODD_MODULE=dummy + SYSLOG_IDENTIFIER=kmodd KMODD_MODULE=nlmon",
                        check=False).out
        records = [json.loads(line) for line in journal.splitlines() if line.strip()]
        return Boot(modules, manager.module_loads_by_task(vm), shown, why, records)


@pytest.fixture(scope="module")
def boots(guest: image.Guest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Boot]:
    skip_kmodd_without_unit(guest)
    work = tmp_path_factory.mktemp("modules-load")
    listed = image.with_state(guest, [_state(work)], str(work / "boot.img"))
    return {"kmodd": _boot(listed, "modules-load-kmodd", "kmodd.modules_load"),
            "systemd": _boot(listed, "modules-load-systemd", "")}


def test_kmodd_loads_a_listed_module_no_device_asks_for(boots: dict[str, Boot]) -> None:
    boot = boots["kmodd"]
    assert "dummy" in boot.modules
    assert boot.loaded_by["dummy"] == "kmodd"
    assert "nlmon" not in boot.modules


def test_systemd_modules_load_stands_aside_when_kmodd_took_the_lists_over(
        boots: dict[str, Boot]) -> None:
    assert boots["kmodd"].modules_load == {"ActiveState": "inactive", "ConditionResult": "no"}


def test_why_and_the_journal_name_the_list_and_the_line(boots: dict[str, Boot]) -> None:
    boot = boots["kmodd"]
    assert f"listed in {LIST}:2" in boot.why_dummy
    inserted = [r for r in boot.records if r.get("KMODD_OUTCOME") == "inserted"]
    assert [(r["KMODD_MODULE"], r["KMODD_LISTED_IN"], r["PRIORITY"]) for r in inserted] == [
        ("dummy", f"{LIST}:2", "6")]
    denied = [r for r in boot.records if r.get("KMODD_OUTCOME") == "blacklisted"]
    assert [(r["KMODD_LISTED_IN"], r["PRIORITY"], r["MESSAGE"]) for r in denied] == [
        (f"{LIST}:3", "5", f"Module 'nlmon' is deny-listed (by kmod); skipped: blacklisted by "
                           f"{DENY}:1 [listed in {LIST}:3]")]


def test_by_default_systemd_modules_load_keeps_the_lists(boots: dict[str, Boot]) -> None:
    boot = boots["systemd"]
    assert boot.modules_load == {"ActiveState": "active", "ConditionResult": "yes"}
    assert "dummy" in boot.modules
    assert boot.loaded_by["dummy"].startswith("systemd-modules")  # comm: 15 characters
    # kmodd only saw it go live, as any module another program loads.
    assert [(r["KMODD_MODULE"], "KMODD_LISTED_IN" in r, r["MESSAGE"]) for r in boot.records] == [
        ("dummy", False, "Module dummy went live, loaded not by kmodd but by the kernel's own "
                         "request or another program")]
