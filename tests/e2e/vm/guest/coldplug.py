"""In-guest coldplug measurement: start a module loader, wait until it is done, report JSON.

    python3 /vm/coldplug.py --loader udev [--linger 3] --out /run/coldplug.json
    python3 /vm/coldplug.py --loader exec --exec '["/usr/bin/kmodd"]' \
        --env '{"K": "V"}' [--notify] --out /run/coldplug.json

udev: systemd-udevd --daemon, `udevadm trigger --type=devices --action=add`, `udevadm settle`.
exec: the loader's own command line (as its systemd unit gives it), started in its own
session; it is done when it has said READY=1 (with --notify), a first module went live, and
then for --quiet seconds no uevent came and nothing ran in its session (agent.wait_idle).
Both: linger, snapshot again (asynchronously probed devices, e.g. behind a USB hub, can
still load modules after `udevadm settle`). Module load times come from the kernel's
`add@/module/NAME` uevents, sent once the module's init returned.
Times in the report are seconds from the loader's start (udev: from the trigger).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent import UeventListener, insert_trace_report, insert_trace_start, wait_idle

SYSFS_DEVICES = "/sys/devices"
UDEVD = "/lib/systemd/systemd-udevd"
LOADER_LOG = "/run/coldplug-loader.log"  # an exec loader's stdout and stderr


def _tail(path: str, limit: int) -> str:
    """The last `limit` bytes of a file as text ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def loaded_modules() -> list[str]:
    with open("/proc/modules") as f:
        return sorted(line.split()[0] for line in f if line.strip())


def modaliases() -> dict[str, str]:
    """devpath -> modalias of every device under /sys/devices (file, else uevent MODALIAS=)."""
    out: dict[str, str] = {}
    for dirpath, _dirnames, filenames in os.walk(SYSFS_DEVICES):
        alias = None
        if "modalias" in filenames:
            try:
                with open(os.path.join(dirpath, "modalias"), errors="replace") as f:
                    alias = f.read().strip()
            except OSError:
                pass
        if not alias and "uevent" in filenames:
            try:
                with open(os.path.join(dirpath, "uevent"), errors="replace") as f:
                    for line in f:
                        if line.startswith("MODALIAS="):
                            alias = line.strip().split("=", 1)[1]
            except OSError:
                pass
        if alias:
            out[dirpath[len("/sys"):]] = alias
    return out


def bindings() -> list[dict[str, str]]:
    """Every device bound to a driver: devpath, driver, module (or "" when built in)."""
    out = []
    for dirpath, dirnames, _filenames in os.walk(SYSFS_DEVICES):
        if "driver" in dirnames or os.path.islink(os.path.join(dirpath, "driver")):
            drv = os.path.join(dirpath, "driver")
            module = os.path.join(drv, "module")
            out.append({
                "devpath": dirpath[len("/sys"):],
                "driver": os.path.basename(os.readlink(drv)),
                "module": os.path.basename(os.readlink(module)) if os.path.islink(module) else "",
            })
    return out


def cpu_ticks() -> list[int]:
    """The guest's cumulative CPU ticks (/proc/stat `cpu`): user, nice, system, idle, iowait,
    irq, softirq, steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


class CpuAtModules:
    """CPU ticks sampled as each module goes live, to split the coldplug's wall time into
    user space, kernel and idle up to the last module; with `pid` set, also the loader's
    own (its threads', from /proc/PID/stat)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, list[int], list[int]]] = []
        self.pid: int | None = None

    def __call__(self, t: float, data: bytes) -> None:
        if data.startswith(b"add@/module/"):
            self.samples.append((t, cpu_ticks(), self._loader_ticks()))

    def _loader_ticks(self) -> list[int]:
        if self.pid is None:
            return []
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return []
        return [int(fields[11]), int(fields[12])]  # utime, stime

    def split(self, start: list[int], upto: float) -> dict[str, float]:
        """Seconds of user, system (with irq), idle (with iowait) from `start` to the last
        sample at or before `upto`, and the loader's user and system time by then."""
        end = max((s for s in self.samples if s[0] <= upto), default=None,
                  key=lambda s: s[0])
        if end is None:
            return {}
        d = [b - a for a, b in zip(start, end[1], strict=True)]
        hz = os.sysconf("SC_CLK_TCK")
        out = {"user": round((d[0] + d[1]) / hz, 2),
               "system": round((d[2] + d[5] + d[6]) / hz, 2),
               "idle": round((d[3] + d[4]) / hz, 2), "steal": round(d[7] / hz, 2)}
        if end[2]:
            out["loader_user"] = round(end[2][0] / hz, 2)
            out["loader_system"] = round(end[2][1] / hz, 2)
        return out


def run(argv: list[str]) -> float:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic()


KMODD_MARK = b"# Installed by kmodd"


def unmask_udev_rules(rules_dir: str = "/etc/udev/rules.d") -> list[str]:
    """Remove kmodd's overrides of udev's module-loading rules: the anchor is udev as shipped."""
    removed = []
    for name in sorted(os.listdir(rules_dir)) if os.path.isdir(rules_dir) else []:
        path = os.path.join(rules_dir, name)
        with open(path, "rb") as f:
            if f.read(len(KMODD_MARK)) == KMODD_MARK:
                os.unlink(path)
                removed.append(name)
    return removed


def start_udev(t: dict[str, float]) -> None:
    unmask_udev_rules()
    t["loader_start"] = time.monotonic()
    run([UDEVD, "--daemon"])
    t["ready"] = run(["udevadm", "control", "--ping"])
    t["trigger_start"] = time.monotonic()
    t["trigger_end"] = run(["udevadm", "trigger", "--type=devices", "--action=add"])
    t["settle_end"] = run(["udevadm", "settle", "--timeout=600"])


def start_exec(t: dict[str, float], argv: list[str], env: dict[str, str], notify: bool,
               quiet: float, first_wait: float, timeout: float,
               listener: UeventListener, cpu_at: CpuAtModules) -> subprocess.Popen[bytes]:
    """Start the loader in its own session; return once it is ready and then idle
    (agent.wait_idle: no uevent and nothing running in its session for `quiet` s)."""
    full_env = {**os.environ, **env}
    sock = None
    if notify:
        path = f"/run/coldplug-notify.{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(timeout)
        full_env["NOTIFY_SOCKET"] = path
    t["loader_start"] = t["trigger_start"] = time.monotonic()
    with open(LOADER_LOG, "ab") as log:
        proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    cpu_at.pid = proc.pid
    while sock is not None and "ready" not in t:
        try:
            msg = sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            raise SystemExit(f"loader sent no READY=1 within {timeout} s") from None
        if "READY=1" in msg.split("\n"):
            t["ready"] = time.monotonic()
    def last_uevent() -> float:
        return listener.last_t

    def any_module() -> bool:
        return listener.module_seen

    r = wait_idle(proc.pid, last_uevent, any_module, t["loader_start"], quiet, first_wait,
                  timeout)
    if proc.poll() is not None:
        raise SystemExit(f"loader exited with {proc.returncode} during coldplug "
                         f"(see {LOADER_LOG})")
    if not r["idle"]:
        raise SystemExit(f"loader still busy after {timeout} s")
    t["settle_end"] = time.monotonic()
    return proc


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--loader", choices=("udev", "exec"), required=True)
    p.add_argument("--exec", dest="exec_argv", default="[]", help="JSON argv of the loader")
    p.add_argument("--env", default="{}", help="JSON environment additions")
    p.add_argument("--notify", action="store_true", help="wait for READY=1 (Type=notify)")
    p.add_argument("--quiet", type=float, default=3.0,
                   help="exec loader: done after this long idle and without any uevent")
    p.add_argument("--first-wait", type=float, default=60.0,
                   help="exec loader: how long to wait for its first module")
    p.add_argument("--linger", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", default="/run/coldplug.json")
    a = p.parse_args()

    cpu_at = CpuAtModules()
    listener = UeventListener(cpu_at, deferred=True)
    insert_trace_start()
    before_mods = loaded_modules()
    before_alias = modaliases()
    t: dict[str, float] = {}
    events: list[dict[str, Any]] = []
    cpu_start = cpu_ticks()
    if a.loader == "udev":
        start_udev(t)
    else:
        start_exec(t, json.loads(a.exec_argv), json.loads(a.env), a.notify, a.quiet,
                   a.first_wait, a.timeout, listener, cpu_at)
    settled_mods = loaded_modules()
    time.sleep(a.linger)
    t["linger_end"] = time.monotonic()
    final_mods = loaded_modules()
    events.extend(listener.take())
    after_alias = modaliases()
    bound = bindings()
    # modules that went live after the final snapshot (while sysfs was walked): a sign that
    # the loader was not done when it looked done
    after_snapshot = [str(e["devpath"]).split("/")[2] for e in listener.take()
                      if e["action"] == "add" and str(e["devpath"]).startswith("/module/")]
    listener.stop()
    inserts = insert_trace_report()

    t0 = t["trigger_start"]
    module_events: list[dict[str, Any]] = [
        {"module": str(e["devpath"]).split("/")[2], "t": float(e["t"]) - t0} for e in events
        if e["action"] == "add" and str(e["devpath"]).startswith("/module/")]
    times = {k: v - t0 for k, v in t.items()}
    if module_events:
        times["last_module"] = max(m["t"] for m in module_events)
    # CPU from the loader's start (udev: its daemon start, just before the trigger) to the
    # last module live
    cpu = cpu_at.split(cpu_start, t0 + times.get("last_module", 0.0))
    with open("/proc/cpuinfo") as f:
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    report = {
        "loader": a.loader, "kernel": os.uname().release, "cpu": cpu_model,
        "cpu_seconds": cpu,
        "modules_before": before_mods, "modules_settled": settled_mods,
        "modules": final_mods,
        "late_modules": sorted(set(final_mods) - set(settled_mods)),
        "modules_after_snapshot": after_snapshot,
        "times": times, "module_events": module_events,
        "uevents": len(events),
        "synthetic_uevents": sum(1 for e in events if "SYNTH_UUID" in e["env"]),
        "modaliases_before": before_alias, "modaliases_after": after_alias,
        "bindings": bound, "inserts": inserts,
        "loader_log": _tail(LOADER_LOG, 256 * 1024),
    }
    with open(a.out + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(a.out + ".tmp", a.out)
    print(json.dumps({"modules": len(final_mods), "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
