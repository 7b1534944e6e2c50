"""The module loaders an e2e run can put in the guest: `udev` (the anchor) and `kmodd`.

kmodd is started the way systemd would start it: its unit file, installed by the overlay at
image.UNIT_GUEST, is read back from the guest and `unit.service_command` gives argv,
environment and readiness protocol. Whether kmodd is there at all is decided in the guest.
"""

from __future__ import annotations

import json
import shlex
from typing import Protocol

from tests.e2e.vm import image
from tests.e2e.vm.machine import VM, GuestError
from tests.e2e.vm.unit import ServiceCommand, UnitError, service_command

UDEVD = "/lib/systemd/systemd-udevd"
UNIT_PATH = "/" + image.UNIT_GUEST
QUIET_SECONDS = 3.0  # a loader is done after this long idle, without uevents (agent.wait_idle)
FIRST_MODULE_WAIT = 60.0  # ...once its first module went live (or this long passed)
IDLE_TIMEOUT = 900.0
READY_TIMEOUT = 120.0


class Loader(Protocol):
    name: str

    def unavailable(self, vm: VM) -> str | None:
        """None if the loader can run in this guest, else why not."""

    def coldplug_args(self, vm: VM) -> list[str]:
        """Arguments for the in-guest /vm/coldplug.py that select this loader."""

    def start(self, vm: VM) -> dict[str, float]:
        """Start the loader as a service and return once its coldplug is done."""


class Udev:
    """systemd-udevd + kmod, as Debian ships them: the anchor."""

    name = "udev"

    def unavailable(self, vm: VM) -> str | None:
        r = vm.sh(f"test -x {UDEVD}", check=False)
        return None if r.rc == 0 else f"{UDEVD} is not in the guest image"

    def coldplug_args(self, vm: VM) -> list[str]:
        return ["--loader", "udev"]

    def start(self, vm: VM) -> dict[str, float]:
        # The overlay hides udev's module-loading rules in /etc/udev/rules.d, as the package's
        # diversions do; the anchor is Debian's udev as shipped, so those overrides go first.
        vm.sh("python3 -c 'import sys; sys.path.insert(0, \"/vm\"); "
              "import coldplug; coldplug.unmask_udev_rules()'")
        r = vm.sh(f"{UDEVD} --daemon && udevadm control --ping && "
                  "udevadm trigger --type=devices --action=add && udevadm settle --timeout=600",
                  timeout=900)
        return {"coldplug_seconds": r.dt}


class Kmodd:
    """kmodd from the checkout, started from its unit's ExecStart= and Environment=."""

    name = "kmodd"

    def unavailable(self, vm: VM) -> str | None:
        r = vm.sh("python3 -c 'import kmodd'", check=False)
        if r.rc != 0:
            return f"kmodd is not importable in the guest: {r.err.strip().splitlines()[-1:]}"
        if vm.sh(f"test -f {UNIT_PATH}", check=False).rc != 0:
            return (f"the checkout has no systemd/kmodd.service, so the guest has no "
                    f"{UNIT_PATH} to start kmodd from")
        try:
            cmd = self.command(vm)
        except UnitError as e:
            return f"cannot start kmodd from its unit: {e}"
        if vm.sh(f"command -v {shlex.quote(cmd.argv[0])}", check=False).rc != 0:
            return f"{cmd.argv[0]} (ExecStart= of {UNIT_PATH}) is not in the guest"
        return None

    def command(self, vm: VM) -> ServiceCommand:
        def read(path: str) -> str | None:
            try:
                return vm.get(path).decode()
            except GuestError:
                return None

        text = vm.get(UNIT_PATH).decode()
        return service_command(text, "kmodd.service", read_file=read)

    def coldplug_args(self, vm: VM) -> list[str]:
        cmd = self.command(vm)
        args = ["--loader", "exec", "--exec", json.dumps(list(cmd.argv)),
                "--env", json.dumps(cmd.env)]
        return [*args, "--notify"] if cmd.notify else args

    def start(self, vm: VM) -> dict[str, float]:
        cmd = self.command(vm)
        since = vm.uevents_start(stream=True)
        info = vm.spawn(list(cmd.argv), env=cmd.env, notify=cmd.notify, name="kmodd")
        out = {"pid": float(info["pid"])}
        if cmd.notify:
            assert vm.agent is not None
            ready = vm.agent.wait_for("notify", lambda m: m["pid"] == info["pid"] and
                                      "READY=1" in m["msg"].split("\n"),
                                      timeout=READY_TIMEOUT, since=since)
            if ready is None:
                raise GuestError(f"kmodd sent no READY=1 within {READY_TIMEOUT} s:\n"
                                 + vm.sh(f"cat {info['log']}", check=False).out[-3000:])
            out["ready_seconds"] = ready[1]["t"] - info["t0"]
        idle = vm.call("wait_idle", reply_timeout=IDLE_TIMEOUT + 30, pid=info["pid"],
                       since=info["t0"], quiet=QUIET_SECONDS, first_wait=FIRST_MODULE_WAIT,
                       timeout=IDLE_TIMEOUT)
        if not idle["idle"]:
            raise GuestError(f"kmodd still busy {IDLE_TIMEOUT} s after its start")
        out["coldplug_seconds"] = (idle["last_module"] or info["t0"]) - info["t0"]
        return out


LOADERS: dict[str, Loader] = {"udev": Udev(), "kmodd": Kmodd()}
