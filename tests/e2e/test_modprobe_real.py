"""kmodd's tools on the real Debian 6.1 kernel: loads, removals, failures explained.

One boot (device set `none`, `module_blacklist=dummy` on the kernel command line) carries
everything: `kmodctl modprobe` and `modprobe -r` (holders, --remove-holders, -w) compared
with the guest's real kmod 30 on the same step, `kmodctl insmod`/`rmmod`, `kmodctl lsmod`
against the real `lsmod`, failures (a bad option, `module_blacklist=`) explained by
`kmodctl explain` with the kernel's own log lines, what the kernel shows a diagnosis
(kallsyms, keys, lockdown), and last tests/kernel/guest_checks.py (it taints the kernel).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator

import pytest

from tests.e2e.vm import devices, image
from tests.e2e.vm.machine import VM, ShResult

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_CHECKS = os.path.join(os.path.dirname(HERE), "kernel", "guest_checks.py")
BLACKLISTED = "dummy"  # module_blacklist= on the guest's command line
BAD_OPTIONS = "/etc/modprobe.d/e2e-explain.conf"


@pytest.fixture(scope="module")
def vm(guest: image.Guest) -> Iterator[VM]:
    if not guest.overlay.has_kmodd:
        pytest.skip("the checkout's kmodd is not installed in the guest")
    with VM(devices=devices.none(), guest=guest, name="test-modprobe-real",
            append=f"module_blacklist={BLACKLISTED}") as v:
        yield v


def run(vm: VM, cmd: str, timeout: float = 120) -> tuple[int | None, str, str]:
    r: ShResult = vm.sh(cmd, check=False, timeout=timeout)
    return r.rc, r.out, r.err


def loaded(vm: VM, *names: str) -> dict[str, bool]:
    return {n: vm.sh(f"test -d /sys/module/{n}", check=False).rc == 0 for n in names}


def moddir(vm: VM) -> str:
    return f"/lib/modules/{vm.sh('uname -r').out.strip()}"


def test_the_kernel_shows_a_diagnosis_its_exports_keys_and_switches(vm: VM) -> None:
    """What explain reads from the kernel (the guest's init does not mount securityfs;
    systemd would)."""
    vm.sh("mountpoint -q /sys/kernel/security || "
          "mount -t securityfs securityfs /sys/kernel/security")
    stats = vm.sh(
        "echo lines $(wc -l < /proc/kallsyms);"
        "echo ksymtab_vmlinux $(grep -c ' __ksymtab_[^[:space:]]*$' /proc/kallsyms);"
        "echo ksymtab_modules $(grep -c ' __ksymtab_.*\\[' /proc/kallsyms);"
        "echo crc $(grep -c ' __crc_' /proc/kallsyms);"
        "echo keys $(grep -c asymmetri /proc/keys);"
        "echo sig_enforce $(cat /sys/module/module/parameters/sig_enforce);"
        "echo lockdown $(cat /sys/kernel/security/lockdown)").out
    print(stats)
    values = dict(line.split(" ", 1) for line in stats.splitlines())
    assert int(values["ksymtab_vmlinux"]) > 5000  # exports are marked (KALLSYMS_ALL)
    assert values["crc"] == "0"  # but their CRCs are not in kallsyms on 6.1
    assert values["sig_enforce"] == "N"
    assert values["lockdown"] == "[none] integrity confidentiality"
    print(vm.sh("grep asymmetri /proc/keys", check=False).out)


def test_modprobe_loads_the_dependency_first_and_lsmod_agrees_with_the_real_one(vm: VM) -> None:
    assert run(vm, "kmodctl modprobe -v vfat") == (
        0, f"insmod {moddir(vm)}/kernel/fs/fat/fat.ko \n"
           f"insmod {moddir(vm)}/kernel/fs/fat/vfat.ko \n", "")
    assert loaded(vm, "fat", "vfat") == {"fat": True, "vfat": True}
    ours, real = run(vm, "kmodctl lsmod"), run(vm, "lsmod")
    assert ours == real
    assert any(line.startswith("fat ") and line.endswith(" 1 vfat")
               for line in ours[1].splitlines())


def test_removing_a_module_others_hold_is_refused_in_kmods_words(vm: VM) -> None:
    ours, real = run(vm, "kmodctl modprobe -r fat"), run(vm, "modprobe -r fat")
    assert ours == real == (1, "", "modprobe: FATAL: Module fat is in use.\n")


def test_wait_on_a_held_module_ends_as_kmod_30_ends(vm: VM) -> None:
    """kmod 30 returns 0 when -w runs out (and may spin forever when it checks the clock
    late); the real one runs under `timeout` and is compared only if it finished."""
    ours = run(vm, "kmodctl modprobe -r -w 300 fat")
    real = run(vm, "timeout 20 modprobe -r -w 300 fat", timeout=60)
    print(f"kmodd: {ours}; kmod 30: {real}")
    assert ours == (0, "", "")
    if real[0] != 124:
        assert real == ours
    assert loaded(vm, "fat") == {"fat": True}


def test_modprobe_r_removes_the_module_and_its_unused_dependency_as_kmod_does(vm: VM) -> None:
    ours = run(vm, "kmodctl modprobe -r -v vfat")
    assert ours == (0, "rmmod vfat\nrmmod fat\n", "")
    assert loaded(vm, "fat", "vfat") == {"fat": False, "vfat": False}
    vm.sh("modprobe vfat")
    assert run(vm, "modprobe -r -v vfat") == ours


def test_remove_holders_ends_as_kmod_30_ends(vm: VM) -> None:
    """kmod 30 removes the holder, whose unused dependency (the module asked for) goes with
    it, then fails to remove that module again (fixed upstream in 2025)."""
    vm.sh("modprobe vfat")
    real = run(vm, "modprobe -r -v --remove-holders fat")
    vm.sh("kmodctl modprobe vfat")
    ours = run(vm, "kmodctl modprobe -r -v --remove-holders fat")
    assert ours == real
    assert ours[:2] == (1, "rmmod vfat\nrmmod fat\nrmmod fat\n")
    assert loaded(vm, "fat", "vfat") == {"fat": False, "vfat": False}


def test_insmod_rmmod_and_first_time_through_kmodctl(vm: VM) -> None:
    fat = f"{moddir(vm)}/kernel/fs/fat/fat.ko"
    assert run(vm, f"kmodctl insmod {fat}") == (0, "", "")
    both = (run(vm, "kmodctl modprobe --first-time fat"), run(vm, "modprobe --first-time fat"))
    assert both[0] == both[1] == (
        1, "", "modprobe: ERROR: could not insert 'fat': Module already in kernel\n")
    assert run(vm, "kmodctl rmmod fat") == (0, "", "")
    both = (run(vm, "kmodctl modprobe -r --first-time fat"),
            run(vm, "modprobe -r --first-time fat"))
    assert both[0] == both[1] == (1, "", "modprobe: FATAL: Module fat is not in kernel.\n")


def test_a_bad_option_fails_in_kmods_words_and_explain_quotes_the_kernel(vm: VM) -> None:
    ours = run(vm, "kmodctl modprobe i6300esb heartbeat=notanumber")
    assert ours == run(vm, "modprobe i6300esb heartbeat=notanumber") == (
        1, "", "modprobe: ERROR: could not insert 'i6300esb': Invalid argument\n")
    r = run(vm, "kmodctl explain --try i6300esb heartbeat=notanumber")
    print(r[1])
    lines = r[1].splitlines()
    assert r[0] == 1
    assert lines[0] == "(computed by kmodctl (a load attempted here))"
    assert "[problem] attempt: the load failed with EINVAL: invalid" in lines
    assert "    kernel log: i6300esb: `notanumber' invalid for parameter `heartbeat'" in lines
    assert "    options: heartbeat=notanumber" in lines


def test_an_option_in_modprobe_d_is_pointed_at_with_file_and_line(vm: VM) -> None:
    vm.put(BAD_OPTIONS, "# e2e\noptions i6300esb heartbeat=notanumber\n")
    try:
        r = run(vm, "kmodctl explain i6300esb")
        print(r[1])
        lines = r[1].splitlines()
        assert r[0] == 1
        assert lines[0] == "(computed by kmodctl (kmodd is not running))"
        assert ("    invalid value: heartbeat=notanumber: not a number in the range of int "
                f"(-2147483648..2147483647) (parmtype int) ({BAD_OPTIONS}:2)") in lines
        # the earlier attempts' lines are still in the kernel log
        assert "    kernel log: i6300esb: `notanumber' invalid for parameter `heartbeat'" in lines
    finally:
        vm.sh(f"rm -f {BAD_OPTIONS}")


def test_module_blacklist_on_the_command_line_is_explained(vm: VM) -> None:
    assert run(vm, f"kmodctl modprobe {BLACKLISTED}") == run(vm, f"modprobe {BLACKLISTED}") \
        == (1, "", f"modprobe: ERROR: could not insert '{BLACKLISTED}': Operation not permitted\n")
    r = run(vm, f"kmodctl --json explain --try {BLACKLISTED}")
    data = json.loads(r[1])
    findings = {(f["check"], f["verdict"]): f for f in data["explanation"]["findings"]}
    attempt = findings[("attempt", "problem")]
    assert {"label": "kernel log", "text": f"Module {BLACKLISTED} is blacklisted",
            "path": None, "line": None, "offset": None} in attempt["evidence"]
    assert ("module-blacklist", "problem") in findings


def test_explain_of_a_module_that_loads_finds_no_problem_on_the_real_kernel(vm: VM) -> None:
    r = run(vm, "kmodctl --json explain vfat")
    data = json.loads(r[1])["explanation"]
    verdicts = {f["check"]: f["verdict"] for f in data["findings"]}
    print(run(vm, "kmodctl explain vfat")[1])
    assert r[0] == 0
    assert verdicts["symbols"] == verdicts["modversions"] == verdicts["vermagic"] == "ok"
    assert verdicts["signature"] == "ok"  # signed by the build key the kernel holds
    signature = next(f for f in data["findings"] if f["check"] == "signature")
    assert {"label": "lockdown", "text": "none", "path": "/sys/kernel/security/lockdown",
            "line": None, "offset": None} in signature["evidence"]


def test_guest_checks_pass_on_the_real_kernel(vm: VM) -> None:
    """tests/kernel/guest_checks.py, with tests/modules built for this kernel (last: it
    taints the kernel)."""
    from tests.modules.build import built_modules

    try:
        modules = built_modules()
    except Exception as err:  # no linux-headers: run without our own modules
        print(f"tests/modules not built: {err}")
        modules = {}
    vm.sh("mkdir -p /tmp/testmods")
    for name, path in modules.items():
        with open(path, "rb") as f:
            vm.put(f"/tmp/testmods/{name}.ko", f.read())
    with open(GUEST_CHECKS, "rb") as f:
        vm.put("/tmp/guest_checks.py", f.read())
    args = " --test-modules /tmp/testmods" if modules else ""
    r = vm.sh(f"python3 /tmp/guest_checks.py{args}", check=False, timeout=600)
    checks = json.loads(r.out)
    failed = [(c["name"], c["detail"]) for c in checks if not c["ok"]]
    print(f"guest checks: {len(checks)} run, {len(failed)} failed"
          + (f"; with tests/modules: {shlex.join(sorted(modules))}" if modules else ""))
    assert failed == []
    assert r.rc == 0
