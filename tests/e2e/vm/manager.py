"""The guest's service manager, when systemd is PID 1 (`VM(init=Init.SYSTEMD)`).

Queries go through the agent to `systemctl`/`systemd-analyze` in the guest (as root, on
systemd's private socket: the minbase image has no D-Bus daemon). What a unit file asks for
(`CapabilityBoundingSet=`, `MemoryMax=`) is read from the unit itself, so that a test compares
the running service with the unit it was started from, not with numbers copied into the test.

    with VM(init=Init.SYSTEMD) as vm:
        wait_active(vm, "kmodd.service")
        show(vm, "kmodd.service", "MemoryMax", "NRestarts")  # {"MemoryMax": "167772160", ...}
"""

from __future__ import annotations

import json
import re
import shlex
import time

from tests.e2e.vm.machine import VM, GuestError
from tests.e2e.vm.unit import parse_sections

ACTIVE_TIMEOUT = 180.0
COLDPLUG_TIMEOUT = 600.0
POLL_SECONDS = 0.5
# A unit that reached one of these will not become active without a new start job.
GIVEN_UP_STATES = ("failed", "inactive")
# Linux capability numbers (include/uapi/linux/capability.h), for CapBnd/CapEff masks.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# systemd's size suffixes (base 1024), as MemoryMax= etc. take them.
SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"(\d+)\s*([KMGTP]?)")
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
# Boot-time tracing of every module load from the first one on, with the task that made it
# (a kernel parameter; `module_loads_by_task` reads the trace back).
TRACE_MODULE_LOADS = "trace_event=module:module_load"
TRACEFS = "/sys/kernel/tracing"


def show(vm: VM, unit: str, *properties: str) -> dict[str, str]:
    """`systemctl show UNIT -p A,B,...`: property -> value (as systemctl prints it)."""
    r = vm.sh(f"systemctl show {shlex.quote(unit)} -p {','.join(properties)}")
    out: dict[str, str] = {}
    for line in r.out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def wait_active(vm: VM, unit: str, timeout: float = ACTIVE_TIMEOUT) -> None:
    """Wait until `unit` is active; raise with its status and journal once it gave up."""
    deadline = time.monotonic() + timeout
    while True:
        state = show(vm, unit, "ActiveState")["ActiveState"]
        if state == "active":
            return
        pending = vm.sh(f"systemctl list-jobs --no-legend {shlex.quote(unit)}",
                        check=False).out.strip()
        if (state in GIVEN_UP_STATES and not pending) or time.monotonic() > deadline:
            raise GuestError(f"{unit} is {state}, not active:\n" + describe(vm, unit))
        time.sleep(POLL_SECONDS)


def describe(vm: VM, unit: str) -> str:
    """`systemctl status` and the unit's journal, for failure messages."""
    q = shlex.quote(unit)
    return vm.sh(f"systemctl status --no-pager -l {q}; journalctl --no-pager -b -u {q} | "
                 "tail -n 60", check=False).out


def main_pid(vm: VM, unit: str) -> int:
    pid = int(show(vm, unit, "MainPID")["MainPID"])
    if pid == 0:
        raise GuestError(f"{unit} has no main process")
    return pid


def process_status(vm: VM, pid: int) -> dict[str, str]:
    """/proc/PID/status as field -> value."""
    text = vm.get(f"/proc/{pid}/status").decode()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def unit_file_settings(vm: VM, path: str) -> dict[str, str]:
    """The [Service] settings of the unit file at `path` in the guest (last assignment wins)."""
    text = vm.get(path).decode()
    return {key: value for _, key, value in parse_sections(text, path).get("Service", [])}


def capability_mask(names: str) -> int:
    """The bit mask of a `CapabilityBoundingSet=` value (space-separated CAP_* names)."""
    mask = 0
    for name in names.split():
        if name not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r}")
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def parse_size(value: str) -> int:
    """A systemd size (`160M`, `1G`, `4096`) in bytes."""
    m = _SIZE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"not a size: {value!r}")
    return int(m.group(1)) * SIZE_SUFFIXES[m.group(2)]


def security_exposure(vm: VM, unit: str) -> tuple[float, str]:
    """`systemd-analyze security UNIT`: the overall exposure (0 best, 10 worst) and the table."""
    out = vm.sh(f"systemd-analyze security --no-pager {shlex.quote(unit)}", check=False).out
    m = _EXPOSURE.search(out)
    if m is None:
        raise GuestError(f"systemd-analyze security printed no exposure level:\n{out[-3000:]}")
    return float(m.group(1)), out


def wait_kmodd_coldplug_done(vm: VM, timeout: float = COLDPLUG_TIMEOUT) -> dict[str, object]:
    """Poll `kmodctl status --json` until kmodd reports its coldplug done; its status."""
    deadline = time.monotonic() + timeout
    while True:
        r = vm.sh("kmodctl status --json", check=False)
        if r.rc == 0:
            status: dict[str, object] = json.loads(r.out)["status"]
            if status.get("coldplug_done"):
                return status
        if time.monotonic() > deadline:
            raise GuestError(f"kmodd's coldplug not done within {timeout} s "
                             f"(kmodctl: rc={r.rc} {r.out[-500:]} {r.err[-1000:]})")
        time.sleep(POLL_SECONDS)


def module_loads_by_task(vm: VM) -> dict[str, str]:
    """Module -> the task (comm) whose load of it the boot's trace saw first
    (booted with TRACE_MODULE_LOADS on the kernel command line)."""
    vm.sh(f"mountpoint -q {TRACEFS} || mount -t tracefs tracefs {TRACEFS}")
    loaded_by: dict[str, str] = {}
    for line in vm.get(f"{TRACEFS}/trace").decode().splitlines():
        if line.startswith("#") or " module_load: " not in line:
            continue
        comm = line.split("[", 1)[0].strip().rpartition("-")[0]
        loaded_by.setdefault(line.split(" module_load: ", 1)[1].split()[0], comm)
    return loaded_by
