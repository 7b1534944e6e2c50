#!/usr/bin/env python3
"""The daemon under a flood of unprivileged control clients: memory and hotplug latency.

    python3 bench/control_flood.py [--seconds 60] [--clients 30] [--hotplugs 20]   (as root)

`kmodd` is started as the unit starts it (a fresh interpreter, `--dry-run` so that nothing is
loaded) over a root whose /lib/modules/`uname -r` is the full Debian 6.1 tree (4023 modules)
and whose /sys and /proc are this machine's. Once coldplug is over and the index decoded:

1. idle: this machine's PCI devices are hotplugged (`add` written to their sysfs `uevent`
   file: the kernel broadcasts a real uevent) one after the other; the latency of each is
   the time from the write to the daemon's Monitor event with the device's outcome (root's
   own Monitor connection).
2. flood: `--clients` processes running as `nobody` (uid 65534) connect to the control
   socket and send `Explain` (a module name out of the Debian tree) and `Why` (a device or
   a modalias) as fast as the daemon answers, reconnecting whenever they are refused or
   dropped, for `--seconds`; meanwhile the same hotplugs are timed again.

The daemon's resident memory (VmRSS of its process and every process under it, sampled
every 0.25 s; VmHWM at the end) and the hotplug latencies (p50, max) of both phases are
printed, with the ratio flood/idle, and what the clients were answered.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.kerneltree import debian_kernel_tree  # noqa: E402

#: How long a hotplug may take before it counts as lost (seconds).
HOTPLUG_TIMEOUT = 20.0
#: Pause between two hotplugs of one phase (seconds).
HOTPLUG_GAP = 0.5


def tree_rss_kib(pid: int) -> int:
    """VmRSS of `pid` and of every process below it, in KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, ValueError):
            continue
        todo.extend(int(c) for c in children)
    return total


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def call(sock: socket.socket, method: str, **parameters: object) -> dict[str, object]:
    sock.sendall(json.dumps({"method": f"io.kmodd.{method}",
                             "parameters": parameters}).encode() + b"\0")
    return read_message(sock)


def read_message(sock: socket.socket, buffer: bytearray | None = None) -> dict[str, object]:
    data = buffer if buffer is not None else bytearray()
    while b"\0" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the daemon")
        data += chunk
    end = data.index(b"\0")
    message = json.loads(data[:end])
    del data[: end + 1]
    assert isinstance(message, dict)
    return message


class Monitor:
    """Root's Monitor stream: the arrival time of each outcome event, by devpath."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(json.dumps({"method": "io.kmodd.Monitor", "more": True}).encode()
                          + b"\0")
        self.lock = threading.Lock()
        self.seen: dict[str, list[float]] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = bytearray()
        while True:
            try:
                message = read_message(self.sock, buffer)
            except (OSError, ConnectionError, ValueError):
                return
            event = message.get("parameters", {})
            assert isinstance(event, dict)
            body = event.get("event", {})
            if isinstance(body, dict) and body.get("devpath") and body.get("outcome"):
                with self.lock:
                    self.seen.setdefault(str(body["devpath"]), []).append(time.monotonic())

    def wait(self, devpath: str, after: float) -> float | None:
        deadline = time.monotonic() + HOTPLUG_TIMEOUT
        while time.monotonic() < deadline:
            with self.lock:
                times = [t for t in self.seen.get(devpath, ()) if t >= after]
            if times:
                return min(times)
            time.sleep(0.001)
        return None


def hotplug_devices() -> list[tuple[str, str]]:
    """(devpath, uevent file) of this machine's PCI devices that have a modalias."""
    out = []
    for link in sorted(Path("/sys/bus/pci/devices").iterdir()):
        real = link.resolve()
        if (real / "modalias").exists():
            out.append((str(real)[len("/sys"):], str(real / "uevent")))
    return out


def run_hotplugs(monitor: Monitor, devices: list[tuple[str, str]], count: int) -> list[float]:
    latencies = []
    for i in range(count):
        devpath, uevent = devices[i % len(devices)]
        time.sleep(HOTPLUG_GAP)
        started = time.monotonic()
        with open(uevent, "w") as f:
            f.write("add")
        arrived = monitor.wait(devpath, started)
        if arrived is None:
            print(f"   hotplug of {devpath}: no outcome within {HOTPLUG_TIMEOUT:g} s")
            latencies.append(HOTPLUG_TIMEOUT)
        else:
            latencies.append((arrived - started) * 1000)
    return latencies


def flood_client(path: str, seconds: float, modules: list[str], targets: list[str],
                 seed: int, out: int) -> None:
    """A client process as nobody: Explain and Why as fast as answered (runs in a fork)."""
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    rng = random.Random(seed)
    answers: Counter[str] = Counter()
    end = time.monotonic() + seconds
    sock: socket.socket | None = None
    while time.monotonic() < end:
        try:
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(max(end - time.monotonic(), 0.1))
                sock.connect(path)
            if rng.random() < 0.5:
                reply = call(sock, "Explain", module=rng.choice(modules))
            else:
                reply = call(sock, "Why", target=rng.choice(targets))
            answers[str(reply.get("error", "ok"))] += 1
        except (OSError, ConnectionError, ValueError) as e:
            answers[f"dropped ({type(e).__name__})"] += 1
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
    os.write(out, json.dumps(answers).encode())


def start_daemon(base: Path) -> tuple[subprocess.Popen[bytes], socket.socket]:
    notify = base / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(120)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify)}
    argv = [sys.executable, "-m", "kmodd.daemon.launch", f"--root={base}", "--dry-run",
            "--log-target=stderr", "--log-level=warning", "--no-watch-config"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, cwd=REPO)
    while True:
        text = sock.recv(65536).decode()
        if "coldplug done" in text and "(decoded)" in text:
            return proc, sock


def summary(latencies: list[float]) -> str:
    return (f"p50 {statistics.median(latencies):7.1f} ms  max {max(latencies):7.1f} ms  "
            f"({len(latencies)} hotplugs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--hotplugs", type=int, default=20)
    args = parser.parse_args()
    tree = debian_kernel_tree()
    moddir = str(Path(tree.root) / "lib/modules" / tree.kver)
    base = Path(tempfile.mkdtemp(prefix="kmodd-bench-flood."))
    try:
        (base / "lib/modules").mkdir(parents=True)
        (base / "lib/modules" / os.uname().release).symlink_to(moddir)
        (base / "etc/modprobe.d").mkdir(parents=True)
        (base / "sys").symlink_to("/sys")
        (base / "proc").symlink_to("/proc")
        base.chmod(0o755)
        proc, notify = start_daemon(base)
        try:
            bench(base, proc, moddir, args)
        finally:
            proc.terminate()
            proc.wait(60)
            notify.close()
    finally:
        shutil.rmtree(base)


def bench(base: Path, proc: subprocess.Popen[bytes], moddir: str,
          args: argparse.Namespace) -> None:
    path = str(base / "run/kmodd/io.kmodd")
    os.chmod(base / "run/kmodd", 0o755)
    os.chmod(path, 0o666)
    devices = hotplug_devices()
    modules = sorted({line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0]
                      for line in Path(moddir, "modules.dep").read_text().splitlines()})
    targets = [d for d, _ in devices] + [Path("/sys" + d, "modalias").read_text().strip()
                                         for d, _ in devices]
    monitor = Monitor(path)
    rss_idle = tree_rss_kib(proc.pid)
    print(f"daemon pid {proc.pid}, RSS after coldplug {rss_idle / 1024:.1f} MiB; "
          f"{len(devices)} PCI devices hotplugged in turn")
    idle = run_hotplugs(monitor, devices, args.hotplugs)
    print(f"1. idle:  hotplug {summary(idle)}")

    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(tree_rss_kib(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = []
    for i in range(args.clients):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            code = 0
            try:
                flood_client(path, args.seconds, modules, targets, i, write_end)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(write_end)
        clients.append((pid, read_end))
    started = time.monotonic()
    time.sleep(min(5.0, args.seconds / 4))  # let the flood reach its plateau
    flooded: list[float] = []
    while time.monotonic() - started < args.seconds - 2 and len(flooded) < args.hotplugs:
        flooded += run_hotplugs(monitor, devices[len(flooded) % len(devices):], 1)
    answers: Counter[str] = Counter()
    for pid, read_end in clients:
        with os.fdopen(read_end) as r:
            data = r.read()
        os.waitpid(pid, 0)
        if data:
            answers.update(json.loads(data))
    stop.set()
    sampler.join()
    print(f"2. flood: hotplug {summary(flooded)}; ratio p50 flood/idle "
          f"{statistics.median(flooded) / statistics.median(idle):.2f}x")
    print(f"   daemon RSS during the flood: median {statistics.median(samples) / 1024:.1f} MiB, "
          f"max {max(samples) / 1024:.1f} MiB; VmHWM {vm_hwm_kib(proc.pid) / 1024:.1f} MiB")
    total = sum(answers.values())
    print(f"   {args.clients} clients as nobody, {args.seconds:g} s: {total} answers")
    for name, n in answers.most_common():
        print(f"     {n:8d}  {name}")


if __name__ == "__main__":
    main()
