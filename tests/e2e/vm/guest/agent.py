"""The e2e guest's agent: JSON lines over the second serial port, one thread per request.

Standard library only (it runs in the guest's Debian python3 before anything else is set up).
Request: {"id": N, "op": NAME, ...}; reply: {"id": N, "ok": true, ...} or
{"id": N, "ok": false, "error": TEXT}. Unsolicited lines: {"hello": {...}} once at start,
{"uevent": {...}} for each kernel uevent while streaming is on, {"notify": {...}} for each
sd_notify message of a process started with `spawn` and notify=true.
Times are the guest's CLOCK_MONOTONIC in seconds (`time.monotonic()`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tty

NETLINK_KOBJECT_UEVENT = 15
UEVENT_KERNEL_GROUP = 1
UEVENT_RCVBUF = 16 << 20
UEVENT_MAX = 1 << 16
NOTIFY_DIR = "/run/vm-notify"
TRACEFS = "/sys/kernel/tracing"
# Syscall tracepoints that show every module insertion attempt and its result, whoever makes
# it (modprobe forked by udev, kmodd's own finit_module): a duplicate insert returns -EEXIST.
INSERT_EVENTS = ("syscalls/sys_enter_finit_module", "syscalls/sys_exit_finit_module",
                 "syscalls/sys_enter_init_module", "syscalls/sys_exit_init_module",
                 "module/module_load", "module/module_request")
EEXIST = 17
SPAWN_LOG_DIR = "/run/vm-spawn"


def parse_uevent(data: bytes, t: float) -> dict[str, object] | None:
    """Kernel uevent datagram -> {t, action, devpath, env}; None for non-kernel formats."""
    parts = data.split(b"\0")
    header = parts[0].decode(errors="replace")
    if "@" not in header or header.startswith("libudev"):
        return None
    env: dict[str, str] = {}
    for p in parts[1:]:
        if b"=" in p:
            k, v = p.decode(errors="replace").split("=", 1)
            env[k] = v
    action, devpath = header.split("@", 1)
    return {"t": t, "action": action, "devpath": devpath, "env": env}


class UeventListener:
    """Kernel uevents (multicast group 1, sender pid 0) into a list, optionally to a callback.

    With `deferred`, the thread keeps each datagram as received and parses only in `take()`:
    while a loader is being measured, the referee's Python costs the one vCPU as little as
    possible. Then `on_event(t, data)` gets the raw datagram, `last_t` is the arrival of
    the latest event and `module_seen` whether a module went live (`add@/module/...`).
    """

    def __init__(self, on_event=None, *, deferred: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, UEVENT_RCVBUF)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UEVENT_RCVBUF)
        self.sock.bind((0, UEVENT_KERNEL_GROUP))
        self.events: list[dict[str, object]] = []
        self.raw: list[tuple[float, bytes]] = []
        self.deferred = deferred
        self.last_t = 0.0
        self.module_seen = False
        self.lock = threading.Lock()
        self.on_event = on_event
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data, (pid, _groups) = self.sock.recvfrom(UEVENT_MAX)
            except OSError:
                if not self.running:
                    return
                continue
            t = time.monotonic()
            if pid != 0:
                continue
            if self.deferred:
                with self.lock:
                    self.raw.append((t, data))
                self.last_t = t
                if data.startswith(b"add@/module/"):
                    self.module_seen = True
                if self.on_event is not None:
                    self.on_event(t, data)
                continue
            ev = parse_uevent(data, t)
            if ev is None:
                continue
            with self.lock:
                self.events.append(ev)
            if self.on_event is not None:
                self.on_event(ev)

    def take(self) -> list[dict[str, object]]:
        with self.lock:
            out, self.events = self.events, []
            raw, self.raw = self.raw, []
        for t, data in raw:
            ev = parse_uevent(data, t)
            if ev is not None:
                out.append(ev)
        return out

    def stop(self) -> None:
        self.running = False
        self.sock.close()


def insert_trace_start() -> None:
    """Clear the trace buffer and record module insertion syscalls from now on."""
    if not os.path.exists(f"{TRACEFS}/trace"):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", TRACEFS], check=True)
    with open(f"{TRACEFS}/buffer_size_kb", "w") as f:
        f.write("4096")
    for ev in INSERT_EVENTS:
        with open(f"{TRACEFS}/events/{ev}/enable", "w") as f:
            f.write("1")
    with open(f"{TRACEFS}/trace", "w") as f:
        f.write("")


def insert_trace_report() -> dict[str, object]:
    """Insertion attempts since insert_trace_start: counts by result, and who made them."""
    with open(f"{TRACEFS}/trace") as f:
        return classify_inserts([ln for ln in f if not ln.startswith("#")])


def _task(line: str) -> tuple[str, int]:
    """(comm, pid) of a trace line."""
    comm, _, pid = line.split("[", 1)[0].strip().rpartition("-")
    return comm, int(pid)


def _stamp(line: str) -> float:
    return float(line.split("]", 1)[1].split(":", 1)[0].split()[-1])


def classify_inserts(lines: list[str]) -> dict[str, object]:
    """Count the attempts in trace lines, and tell the three kinds of -EEXIST apart.

    The kernel answers EEXIST in two places. Before running anything, when a module of the
    name is there: while another program's insert was in flight (the kernel's request_module
    runs /sbin/modprobe, e.g. for a codec the loader is loading too: both found the module
    absent), that is a race every loader can meet ("raced"); any other is an insert of a
    module that was already there ("duplicates"). Or after module_load, when the module's
    own init returns EEXIST (a cpufreq driver finding another one in charge) and the kernel
    unloads it again: no duplicate at all ("declined", by module name).
    """
    attempts = 0
    results: dict[str, int] = {}
    callers: dict[str, int] = {}
    spans: list[tuple[str, int, float, float]] = []  # comm, pid, entered, returned
    entered: dict[int, float] = {}
    loading: dict[int, str] = {}  # pid -> the module its running insert began to initialise
    eexist: list[tuple[str, int, float, float, str]] = []
    declined: list[str] = []
    for ln in lines:
        if "sys_finit_module(" in ln or "sys_init_module(" in ln:
            attempts += 1
            comm, pid = _task(ln)
            callers[comm] = callers.get(comm, 0) + 1
            entered[pid] = _stamp(ln)
            loading.pop(pid, None)
        elif " module_load: " in ln:
            _comm, pid = _task(ln)
            if pid in entered:
                loading[pid] = ln.split(" module_load: ", 1)[1].split()[0]
        elif "sys_finit_module ->" in ln or "sys_init_module ->" in ln:
            comm, pid = _task(ln)
            ret = int(ln.rsplit("->", 1)[1].strip(), 16)
            if ret >= 1 << 63:
                ret -= 1 << 64
            key = "ok" if ret == 0 else f"errno{-ret}"
            results[key] = results.get(key, 0) + 1
            start, end = entered.pop(pid, _stamp(ln)), _stamp(ln)
            spans.append((comm, pid, start, end))
            module = loading.pop(pid, None)
            if ret == -EEXIST and module is not None:
                declined.append(module)
            elif ret == -EEXIST:
                eexist.append((comm, pid, start, end, ln.strip()))
    duplicates: list[str] = []
    raced: list[str] = []
    context: list[str] = []  # for each duplicate, what happened in the second before it
    for comm, _pid, start, end, line in eexist:
        rivals = [s for s in spans if s[0] != comm and s[2] <= end and s[3] >= start]
        (raced if rivals else duplicates).append(line)
        if not rivals:
            context += [ln.strip() for ln in lines if ("module" in ln) and
                        start - 1.0 <= _stamp(ln) <= end]
    return {"attempts": attempts, "results": results, "callers": callers,
            "duplicates": len(duplicates), "duplicate_lines": duplicates,
            "duplicate_context": context, "raced": len(raced), "raced_lines": raced,
            "declined": declined}


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()  # state, ppid, pgrp, session, ...


def session_busy(sid: int) -> bool:
    """Is the process session `sid` (a loader started with start_new_session) working?

    Busy: a child process exists (e.g. a modprobe), or a thread of the leader is not
    sleeping (running, runnable, or in uninterruptible sleep such as inside finit_module).
    """
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == sid:
            continue
        fields = _stat_fields(pid)
        if fields is not None and fields[3] == str(sid):
            return True
    try:
        tids = os.listdir(f"/proc/{sid}/task")
    except OSError:
        return False
    for tid in tids:
        fields = _stat_fields(f"{sid}/task/{tid}")
        if fields is not None and fields[0] not in ("S", "I"):
            return True
    return False


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and fields[1] == str(pid):
                out.append(int(entry))
    return out


IDLE_POLL = 0.2


def wait_idle(sid: int, last_uevent: object, any_module: object, start: float, quiet: float,
              first_wait: float, timeout: float) -> dict[str, object]:
    """Wait until the loader in session `sid` is done with what the kernel asked of it.

    Done: for `quiet` s in a row no uevent arrived and the session was not busy, and a
    first module went live (or `first_wait` s passed without one: loading the first module
    can take seconds under TCG). `last_uevent()` and `any_module()` read the listener.
    """
    calm_since = None
    deadline = start + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        # The uevent test first: it is free, while a session scan reads every process's
        # stat file, CPU the loader being measured would otherwise lose to its referee.
        busy = now - last_uevent() < quiet or session_busy(sid)  # type: ignore[operator]
        if busy:
            calm_since = None
        elif calm_since is None:
            calm_since = now
        if (calm_since is not None and now - calm_since >= quiet
                and (any_module() or now - start >= first_wait)):  # type: ignore[operator]
            return {"idle": True, "t": now}
        time.sleep(IDLE_POLL)
    return {"idle": False, "t": time.monotonic()}


class Agent:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[2] &= ~termios.CRTSCTS
        attrs[4] = attrs[5] = termios.B4000000
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.wlock = threading.Lock()
        self.listener: UeventListener | None = None
        self.stream = False
        self.last_uevent = 0.0
        self.module_times: list[float] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.notify_socks: dict[int, socket.socket] = {}

    def send(self, obj: dict[str, object]) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with self.wlock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    # --- ops -------------------------------------------------------------------------------
    def op_sh(self, cmd: str, timeout: float = 120, env: dict[str, str] | None = None,
              input: str | None = None) -> dict[str, object]:
        t = time.monotonic()
        full_env = {**os.environ, **(env or {})}
        try:
            p = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, timeout=timeout,
                               env=full_env, input=(input or "").encode())
        except subprocess.TimeoutExpired as e:
            return {"rc": None, "out": (e.stdout or b"").decode(errors="replace"),
                    "err": (e.stderr or b"").decode(errors="replace") + "\n[timeout]",
                    "dt": time.monotonic() - t, "timeout": True}
        return {"rc": p.returncode, "out": p.stdout.decode(errors="replace"),
                "err": p.stderr.decode(errors="replace"), "dt": time.monotonic() - t,
                "t0": t}

    def op_spawn(self, argv: list[str], env: dict[str, str] | None = None,
                 notify: bool = False, name: str = "proc") -> dict[str, object]:
        """Start a long-running process (own session, output to a log), like a service."""
        os.makedirs(SPAWN_LOG_DIR, exist_ok=True)
        full_env = {**os.environ, **(env or {})}
        sock = None
        if notify:
            os.makedirs(NOTIFY_DIR, exist_ok=True)
            path = f"{NOTIFY_DIR}/{name}.{time.monotonic_ns()}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            full_env["NOTIFY_SOCKET"] = path
        t = time.monotonic()
        with open(f"{SPAWN_LOG_DIR}/{name}.log", "ab") as log:
            p = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[p.pid] = p
        if sock is not None:
            self.notify_socks[p.pid] = sock
            threading.Thread(target=self._notify_reader, args=(p.pid, sock), daemon=True).start()
        return {"pid": p.pid, "t0": t, "log": f"{SPAWN_LOG_DIR}/{name}.log"}

    def _notify_reader(self, pid: int, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            self.send({"notify": {"pid": pid, "t": time.monotonic(),
                                  "msg": data.decode(errors="replace")}})

    def op_signal(self, pid: int, sig: int = signal.SIGTERM) -> dict[str, object]:
        os.kill(pid, sig)
        return {"t": time.monotonic()}

    def op_wait(self, pid: int, timeout: float = 30) -> dict[str, object]:
        p = self.procs.get(pid)
        if p is None:
            raise ValueError(f"pid {pid} was not spawned by the agent")
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            return {"rc": None, "running": True}
        self.procs.pop(pid, None)
        sock = self.notify_socks.pop(pid, None)
        if sock is not None:
            sock.close()
        return {"rc": rc, "running": False, "t": time.monotonic()}

    def op_put(self, path: str, data: str, mode: int = 0o644) -> dict[str, object]:
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        os.chmod(path, mode)
        return {}

    def op_get(self, path: str) -> dict[str, object]:
        with open(path, "rb") as f:
            return {"data": base64.b64encode(f.read()).decode()}

    def op_wait_path(self, paths: list[str], timeout: float = 30, gone: bool = False,
                     interval: float = 0.005) -> dict[str, object]:
        """Poll until every path exists (or, with gone=true, none does); when each did."""
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for p in paths:
                if p not in seen and os.path.lexists(p) != gone:
                    seen[p] = now
            if len(seen) == len(paths) or now > deadline:
                return {"times": seen, "complete": len(seen) == len(paths)}
            time.sleep(interval)

    def op_uevents_start(self, stream: bool = False) -> dict[str, object]:
        self.stream = stream
        if self.listener is None:
            self.listener = UeventListener(self._on_uevent)
        return {"t": time.monotonic()}

    def _on_uevent(self, ev: dict[str, object]) -> None:
        self.last_uevent = float(ev["t"])  # type: ignore[arg-type]
        if ev["action"] == "add" and str(ev["devpath"]).startswith("/module/"):
            self.module_times.append(self.last_uevent)
        if self.stream:
            self.send({"uevent": ev})

    def op_uevents_take(self) -> dict[str, object]:
        return {"events": self.listener.take() if self.listener else []}

    def op_uevents_stop(self) -> dict[str, object]:
        events = []
        if self.listener is not None:
            self.listener.stop()
            events = self.listener.take()
            self.listener = None
        self.stream = False
        return {"events": events}

    def op_insert_trace_start(self) -> dict[str, object]:
        insert_trace_start()
        return {}

    def op_insert_trace_report(self) -> dict[str, object]:
        return insert_trace_report()

    def op_wait_idle(self, pid: int, since: float, quiet: float = 3.0, first_wait: float = 60.0,
                     timeout: float = 600.0) -> dict[str, object]:
        """wait_idle for a spawned loader; also the last module to go live since `since`."""
        if self.listener is None:
            self.listener = UeventListener(self._on_uevent)
        r = wait_idle(pid, lambda: self.last_uevent,
                      lambda: any(t >= since for t in self.module_times),
                      since, quiet, first_wait, timeout)
        mods = [t for t in self.module_times if t >= since]
        return {**r, "last_module": mods[-1] if mods else None, "modules": len(mods)}

    def op_kill_when(self, pid: int, sig: int = signal.SIGKILL, children: bool = False,
                     live_count: int | None = None, among: list[str] | None = None,
                     live_module: str | None = None, worker_user_ticks: int | None = None,
                     timeout: float = 600.0, interval: float = 0.02) -> dict[str, object]:
        """Send `sig` to `pid` (any process, e.g. a service's main one; with `children`, to
        each of its child processes at that moment instead) once a condition holds:

        * live_count: at least this many modules are live (/proc/modules, state Live), of
          the modules named in `among` if given;
        * live_module: that module is live;
        * worker_user_ticks: a thread of `pid` other than its main one has spent this many
          more clock ticks of user time than when the call came (the process is busy in a
          worker thread: a daemon building an index off its event loop).
        Checked every `interval` s here in the guest, so that the host's latency adds
        nothing. Returns whether it was sent, when, and the live modules at that moment.
        """
        def live() -> list[str]:
            with open("/proc/modules") as f:
                return [p[0] for p in (line.split() for line in f) if len(p) > 4
                        and p[4] == "Live"]

        def worker_ticks() -> dict[str, int]:
            out = {}
            for tid in os.listdir(f"/proc/{pid}/task"):
                fields = _stat_fields(f"{pid}/task/{tid}")
                if fields is not None and int(tid) != pid:
                    out[tid] = int(fields[11])  # utime
            return out

        base = worker_ticks() if worker_user_ticks is not None else {}
        counted = set(among) if among is not None else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            modules = live()
            n = len(modules) if counted is None else len(counted.intersection(modules))
            why = None
            if live_count is not None and n >= live_count:
                why = f"{n} modules live" + (f" of {len(counted)}" if counted is not None else "")
            elif live_module is not None and live_module in modules:
                why = f"{live_module} live"
            elif worker_user_ticks is not None:
                try:
                    busy = {tid: t - base.get(tid, 0) for tid, t in worker_ticks().items()}
                except OSError:
                    return {"killed": False, "why": f"pid {pid} is gone", "live": modules}
                tid = max(busy, key=lambda k: busy[k], default=None)
                if tid is not None and busy[tid] >= worker_user_ticks:
                    why = f"thread {tid} ran {busy[tid]} ticks of user time"
            if why is not None:
                t = time.monotonic()
                targets = _children(pid) if children else [pid]
                for target in targets:
                    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                        os.kill(target, sig)
                return {"killed": True, "t": t, "why": why, "live": modules, "pids": targets}
            time.sleep(interval)
        return {"killed": False, "why": f"no condition met within {timeout} s", "live": live()}

    def op_wait_modules_settled(self, quiet: float = 3.0, timeout: float = 300.0,
                                interval: float = 0.2) -> dict[str, object]:
        """Wait until /proc/modules kept the same module names for `quiet` s in a row.

        For a loader the agent did not start (one systemd started): what it loaded is live
        once this returns. Returns the names, and the guest time of the last change seen.
        """
        start = time.monotonic()
        last: set[str] | None = None
        changed = start
        while True:
            with open("/proc/modules") as f:
                names = {line.split()[0] for line in f if line.strip()}
            now = time.monotonic()
            if names != last:
                last, changed = names, now
            if now - changed >= quiet or now - start >= timeout:
                return {"settled": now - changed >= quiet, "modules": sorted(names),
                        "last_change": changed}
            time.sleep(interval)

    def op_clock(self) -> dict[str, object]:
        return {"t": time.monotonic()}

    def op_poweroff(self) -> dict[str, object]:
        threading.Timer(0.1, lambda: os._exit(0)).start()
        return {}

    # --- loop ------------------------------------------------------------------------------
    def handle(self, line: bytes) -> None:
        try:
            req = json.loads(line)
            rid = req.pop("id")
            op = req.pop("op")
        except (ValueError, KeyError) as e:
            self.send({"id": None, "ok": False, "error": f"bad request {line[:200]!r}: {e}"})
            return
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            self.send({"id": rid, "ok": False, "error": f"unknown op {op!r}"})
            return
        try:
            result = fn(**req)
        except Exception as e:  # the agent must outlive any bad request
            self.send({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"})
            return
        self.send({"id": rid, "ok": True, **result})

    def hello(self) -> None:
        with open("/run/modules.at-init") as f:
            modules = [line.split()[0] for line in f if line.strip()]
        with open("/run/uptime.at-init") as f:
            init_uptime = float(f.read().split()[0])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        with open("/proc/1/comm") as f:
            pid1 = f.read().strip()  # "init" (guest/init) or "systemd"
        self.send({"hello": {"kernel": os.uname().release, "modules_at_init": modules,
                             "pid1": pid1,
                             "init_uptime": init_uptime, "uptime": uptime,
                             "monotonic": time.monotonic(), "python": sys.version.split()[0]}})

    def run(self) -> None:
        self.hello()
        buf = b""
        while True:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                time.sleep(0.01)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    threading.Thread(target=self.handle, args=(line,), daemon=True).start()


if __name__ == "__main__":
    Agent(sys.argv[1] if len(sys.argv) > 1 else "/dev/ttyS1").run()
