"""The Debian package in the guest, systemd as PID 1: install, reboot, remove, reboot, purge.

The guest starts as a Debian 12 without kmodd (image.build_without_kmodd: the package's
Depends are there, from Debian's archive). Three boots, each tracing every module load with
the task that made it (manager.TRACE_MODULE_LOADS); a reboot keeps the root file system
(image.with_state: what the boot before wrote and deleted):

 1. udev loads the devices' modules; `apt install ./kmodd_<version>_all.deb` (the package
    packaging/build-deb builds from this checkout) starts kmodd at once;
 2. after the reboot kmodd coldplugs and udev loads nothing; `apt remove kmodd`;
 3. after the reboot udev loads the modules again and kmodd does not run; `apt purge kmodd`
    leaves no file of kmodd behind.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.vm import devices, image, manager
from tests.e2e.vm.machine import VM, Init

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEVICES = devices.none
UNITS = ("kmodd.service", "kmodd.socket", "kmodd-kernel.socket")
APT = "cd /tmp && DEBIAN_FRONTEND=noninteractive apt-get -y -q"
# Files of kmodd's name that are not kmodd's: the test bed's agent and the downloaded package.
NOT_KMODDS = ("kmodd-test-agent.service",)
LEFT_BEHIND = ("find / -xdev -path /vm -prune -o -path /tmp -prune -o -name '*kmodd*' -print "
               "| grep -v -e " + " -e ".join(NOT_KMODDS) + " | sort")


@dataclass(frozen=True)
class Boot:
    modules: frozenset[str]  # live once nothing changed for a while
    loaded_by: dict[str, str]  # module -> the task that loaded it
    active: dict[str, str]  # unit -> ActiveState, at the end of the boot's checks

    @property
    def by_udev(self) -> set[str]:
        return {m for m, task in self.loaded_by.items() if "udev" in task}

    @property
    def by_kmodd(self) -> set[str]:
        return {m for m, task in self.loaded_by.items() if task == "kmodd"}


@dataclass(frozen=True)
class Lifecycle:
    boots: list[Boot]
    coldplug: dict[str, object]  # kmodctl status after the reboot with kmodd installed
    after_install: dict[str, str]  # what the guest shows right after `apt install`
    after_remove: dict[str, str]
    after_purge: dict[str, str]


def package(out: Path) -> Path:
    subprocess.run([str(REPO / "packaging/build-deb"), str(out)], check=True,
                   capture_output=True, timeout=900)
    debs = list(out.glob("kmodd_*_all.deb"))
    assert len(debs) == 1
    return debs[0]


def boot(guest: image.Guest, number: int) -> VM:
    return VM(devices=DEVICES(), guest=guest, name=f"package-{number}", init=Init.SYSTEMD,
              append=manager.TRACE_MODULE_LOADS)


def settle(vm: VM) -> Boot:
    modules = frozenset(vm.wait_modules_settled(quiet=3.0))
    active = {u: manager.show(vm, u, "ActiveState")["ActiveState"] for u in UNITS}
    return Boot(modules, manager.module_loads_by_task(vm), active)


def probe(vm: VM) -> dict[str, str]:
    def out(cmd: str) -> str:
        return vm.sh(cmd, check=False).out.strip()

    return {
        "status": out("dpkg-query -W -f='${db:Status-Abbrev}' kmodd 2>/dev/null"),
        "diversions": out("dpkg-divert --list | grep kmodd | sort"),
        "udev rules": out("ls /lib/udev/rules.d | grep '^80-'"),
        "kmodd.service": out("systemctl is-active kmodd.service"),
        "left behind": out(LEFT_BEHIND),
    }


def capture(vm: VM, index: int, where: Path) -> str:
    """The boot's changes to the root file system since `vm.sh(image.STATE_MARK)`."""
    vm.sh(image.STATE_CAPTURE, timeout=600)
    tar, deleted = vm.get("/run/state.tar.gz"), vm.get("/run/state.deleted")
    return image.state_part(tar, deleted, index, str(where / f"state-{index}.cpio"))


@pytest.fixture(scope="module")
def lifecycle(guest: image.Guest, tmp_path_factory: pytest.TempPathFactory) -> Lifecycle:
    del guest  # its fixture says whether QEMU and the image can be had here
    work = tmp_path_factory.mktemp("package")
    deb = package(work / "dist")
    bare = image.build_without_kmodd()
    boots: list[Boot] = []
    parts: list[str] = []

    with boot(bare, 1) as vm:
        vm.wait_system_running()
        boots.append(settle(vm))
        vm.sh(image.STATE_MARK, timeout=300)
        vm.put(f"/tmp/{deb.name}", deb.read_bytes())
        vm.sh(f"{APT} install ./{deb.name}", timeout=900)
        manager.wait_active(vm, "kmodd.service")
        after_install = probe(vm)
        parts.append(capture(vm, 1, work))

    with boot(image.with_state(bare, parts, str(work / "boot-2.img")), 2) as vm:
        manager.wait_active(vm, "kmodd.service")
        coldplug = manager.wait_kmodd_coldplug_done(vm)
        vm.wait_system_running()
        boots.append(settle(vm))
        vm.sh(image.STATE_MARK, timeout=300)
        vm.sh(f"{APT} remove kmodd", timeout=900)
        after_remove = probe(vm)
        parts.append(capture(vm, 2, work))

    with boot(image.with_state(bare, parts, str(work / "boot-3.img")), 3) as vm:
        vm.wait_system_running()
        boots.append(settle(vm))
        vm.sh(f"{APT} purge kmodd", timeout=900)
        after_purge = probe(vm)

    for number, record in enumerate(boots, 1):
        print(f"boot {number}: units {record.active}; loads by task: "
              f"{json.dumps(record.loaded_by, sort_keys=True)}")
    return Lifecycle(boots, coldplug, after_install, after_remove, after_purge)


def test_before_kmodd_udev_loads_the_devices_modules(lifecycle: Lifecycle) -> None:
    first = lifecycle.boots[0]
    assert first.by_udev
    assert set(first.active.values()) == {"inactive"}


def test_apt_install_diverts_udevs_rules_and_starts_kmodd_at_once(lifecycle: Lifecycle) -> None:
    assert lifecycle.after_install == {
        "status": "ii",
        "diversions": "\n".join(
            f"diversion of /lib/udev/rules.d/{name} to /lib/udev/rules.d/{name}"
            ".diverted-by-kmodd by kmodd"
            for name in ("80-debian-compat.rules", "80-drivers.rules")),
        "udev rules": "\n".join(["80-debian-compat.rules",
                                 "80-debian-compat.rules.diverted-by-kmodd",
                                 "80-drivers.rules.diverted-by-kmodd",
                                 "80-net-setup-link.rules"]),
        "kmodd.service": "active",
        "left behind": lifecycle.after_install["left behind"],
    }


def test_after_the_reboot_kmodd_coldplugs_and_udev_loads_nothing(lifecycle: Lifecycle) -> None:
    before, installed = lifecycle.boots[0], lifecycle.boots[1]
    assert set(installed.active.values()) == {"active"}
    assert lifecycle.coldplug["coldplug_done"] is True
    # The trace saw every live module's load, so an empty udev list is not a blind spot.
    assert sorted(installed.modules - installed.loaded_by.keys()) == []
    assert installed.by_udev == set()
    # What udev loaded before, kmodd loads now (the trace also shows loads whose init then
    # failed, such as the cpufreq drivers QEMU's CPU has no use for: compared as loads).
    assert installed.by_kmodd == before.by_udev


def test_apt_remove_gives_udev_its_rules_back_and_stops_kmodd(lifecycle: Lifecycle) -> None:
    assert lifecycle.after_remove == {
        "status": "rc",
        "diversions": "",
        "udev rules": "\n".join(["80-debian-compat.rules", "80-drivers.rules",
                                 "80-net-setup-link.rules"]),
        "kmodd.service": "inactive",
        "left behind": lifecycle.after_remove["left behind"],
    }
    assert "/etc/kmodd.conf" in lifecycle.after_remove["left behind"].splitlines()


def test_after_the_next_reboot_udev_loads_the_modules_again(lifecycle: Lifecycle) -> None:
    before, removed = lifecycle.boots[0], lifecycle.boots[2]
    assert set(removed.active.values()) == {"inactive"}
    assert removed.by_udev == before.by_udev
    assert not [task for task in removed.loaded_by.values() if "kmodd" in task]


def test_apt_purge_leaves_no_file_of_kmodd_behind(lifecycle: Lifecycle) -> None:
    assert lifecycle.after_purge == {
        "status": "", "diversions": "",
        "udev rules": "\n".join(["80-debian-compat.rules", "80-drivers.rules",
                                 "80-net-setup-link.rules"]),
        "kmodd.service": "inactive", "left behind": ""}
