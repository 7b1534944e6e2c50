"""The running daemon: start-up, the tasks it owns, reloads, and an orderly stop.

Start-up, in this order (DESIGN.md): the module index as mapped and the configuration (a
`Snapshot`), the kernel uevent socket, the control socket, then READY=1. The control
socket listens from the start; the code that serves it is loaded when a client first
connects or once the coldplug burst is over (`start_control`). After READY: the
coldplug feeds every device sysfs shows into the same intake that hotplug events use, while
hotplug keeps running (devices created by drivers that coldplug loads, such as disks behind
a freshly loaded HBA, arrive as uevents meanwhile); then the decoded index is swapped in.

Every task belongs to one `asyncio.TaskGroup`: the uevent receive loop, the resync loop, the
device dispatcher (which owns a task per device being loaded), the control server, the
reload triggers (SIGHUP, inotify) and the watchdog. Stopping (SIGTERM, SIGINT) sends
STOPPING=1, closes the intake and the control socket first, then waits up to `stop_timeout`
for loads in progress (a client's `Load` included: its thread is waited for even though its
connection is gone), ends the install/remove commands still running (their whole process
groups, said in the journal) and cancels what is left.

One daemon runs per root: it takes `system.instance`'s lock before it touches the control
socket's path, and removes at stop only the socket file it made (`system.notify`). Blocking
work runs in the pools of `daemon.workers`, one per kind, never in asyncio's default
executor: a client's stuck question cannot delay a reload, a resync or the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kmodd import __version__
from kmodd.core.autoload.decide import decide
from kmodd.core.autoload.loadrecords import History, LoadedBy
from kmodd.core.autoload.messages import Message
from kmodd.core.autoload.outcome import Outcome
from kmodd.core.runpaths import POLICY_FILE
from kmodd.core.settings import Settings
from kmodd.daemon.devices import OURS_WITHIN, Devices
from kmodd.daemon.events import EventHub
from kmodd.daemon.intake import Intake, Origin
from kmodd.daemon.lifecycle import DaemonState, Lifecycle
from kmodd.daemon.loader import Loader, parallel_limit
from kmodd.daemon.records import Records
from kmodd.daemon.recovery import Binding, Recovery
from kmodd.daemon.report import Reporter
from kmodd.daemon.snapshot import Snapshot, SnapshotFailure, Snapshots
from kmodd.daemon.workers import SYSTEM_WORKERS, WorkerPool
from kmodd.system.binding import SysfsBinding
from kmodd.system.inotify import ChangeWatcher, config_targets
from kmodd.system.instance import (
    LOCK_FILE,
    AlreadyRunning,
    InstanceLock,
    LockUnusable,
    take_instance_lock,
)
from kmodd.system.journal import LogSink, Priority, log_wrapper
from kmodd.system.kernel import KernelPort, LinuxKernel
from kmodd.system.kmsg import DevKmsg
from kmodd.system.liveview import ListedModules
from kmodd.system.loadrecords import RECORD_FILE, open_records, read_boot_id
from kmodd.system.netlink import UeventSource, adopt_uevent_socket, open_uevent_socket
from kmodd.system.notify import (
    LISTEN_VARIABLES,
    BoundSocket,
    ListenFd,
    Notifier,
    PathTaken,
    bind_control,
    unlink_if_ours,
    watchdog_interval,
)
from kmodd.system.root import Root, module_dir
from kmodd.system.sysfs import module_is_present
from kmodd.system.takeover import announce_takeover, lists_loaded_this_boot, mark_lists_loaded

if TYPE_CHECKING:
    from kmodd.daemon.control.state import DaemonControl
    from kmodd.daemon.kernelrequests import KernelRequestWatch

#: `FileDescriptorName=` of the two sockets systemd may pass (the units in systemd/).
CONTROL_FD_NAME = "control"
#: The index is decoded once the burst coldplug sets off is over: no uevent queued and no
#: load running for this long (seconds)...
DECODE_QUIET = 1.0
#: ...or this long after coldplug at the latest.
DECODE_WAIT_MAX = 60.0
KERNEL_FD_NAME = "kernel"
#: Variables meant for the daemon alone; install commands it runs do not see them.
PRIVATE_VARIABLES = (*LISTEN_VARIABLES, "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: Paths changed in one burst that a reload message names; more are counted.
CHANGED_PATHS_SHOWN = 3
#: How the module index was read -> kind of the record that says so.
TOLD_SNAPSHOT: Mapping[str, Message] = {
    "Mapped": Message.INDEX_READY,  # at start
    "Decoded": Message.INDEX_READY,  # after coldplug
    "Loaded": Message.RELOAD_DONE,
}


#: After `stop_timeout`, how long install/remove commands get between SIGTERM and SIGKILL,
#: and then how long the chains whose commands ended get to finish (seconds).
STOP_KILL_GRACE = 1.0


class StartupError(Exception):
    """The daemon cannot start (a socket it needs cannot be opened)."""


class InstanceRunning(StartupError):
    """Another daemon runs for the same root (it holds the instance lock)."""


@dataclass(slots=True)
class DaemonSetup:
    """Everything the daemon is started with. Tests move the roots and pass fakes."""

    settings: Settings
    root: Root = field(default_factory=Root)  # index, config, /sys/module, /run, /dev/kmsg
    devices_root: Root | None = None  # where sysfs devices are scanned (default: root)
    kernel_release: str = field(default_factory=lambda: os.uname().release)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    listen: Sequence[ListenFd] = ()
    started: float = field(default_factory=time.monotonic)


class Daemon:
    """kmodd's event loop side: owns every task, socket and snapshot."""

    def __init__(self, setup: DaemonSetup, sink: LogSink, *, kernel: KernelPort | None = None,
                 source: UeventSource | None = None, notifier: Notifier | None = None,
                 install_signals: bool = True, binding: Binding | None = None) -> None:
        self.setup = setup
        self.settings = setup.settings
        self.root = setup.root
        self.devices_root = setup.devices_root or setup.root
        self.kernel = kernel if kernel is not None else LinuxKernel(setup.root)
        self.notifier = notifier if notifier is not None else Notifier(setup.environ)
        self.hub = EventHub()
        self.reporter = Reporter(sink, self.hub, self.settings.log_level, setup.started)
        self.lifecycle = Lifecycle(setup.started, setup.kernel_release,
                                   dry_run=self.settings.dry_run)
        moddir = module_dir("", setup.kernel_release)
        #: Threads for the daemon's own work (reloads, resyncs, sysfs scans), apart from the
        #: loader's and the clients' (`daemon.workers`).
        self.system_pool = WorkerPool("kmodd-system", SYSTEM_WORKERS)
        self.snapshots = Snapshots(self.root, moddir, self.root.path(moddir),
                                   in_memory=self.settings.index_in_memory,
                                   pool=self.system_pool)
        self._source = source
        #: Device binding in sysfs (re-probes): the real one unless a test gives another.
        self.binding: Binding = (binding if binding is not None
                                 else SysfsBinding(self.devices_root, self.root))
        self._source_in_use: UeventSource | None = None  # the one run() opened
        self._install_signals = install_signals
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.ready = asyncio.Event()
        #: Start-up work is over: coldplug done, then the index decoded (when in memory).
        self.coldplugged = asyncio.Event()
        #: The control plane, built on first use (`start_control`).
        self.control: DaemonControl | None = None
        self._control_wanted = asyncio.Event()
        self.devices: Devices | None = None
        self.records: Records | None = None
        self.intake: Intake | None = None
        self.loader: Loader | None = None
        self.recovery: Recovery | None = None
        self._kmsg: DevKmsg | None = None
        #: Loads still running in threads when the daemon stopped (main() exits hard then).
        self.abandoned_loads = 0
        self._bound: BoundSocket | None = None  # the control socket we bound (not passed)
        self._instance: InstanceLock | None = None

    # -- helpers --------------------------------------------------------------------------------

    @log_wrapper
    def log(self, priority: Priority, message: Message, text: str,
            kind: str | None = None) -> None:
        self.reporter.log(priority, message, text, kind)

    @log_wrapper
    def _uevent_rejected(self, text: str) -> None:
        self.log(Priority.WARNING, Message.UEVENT_REJECTED, text)

    def _listen_fd(self, name: str) -> int | None:
        return next((f.fd for f in self.setup.listen if f.name == name), None)

    def _open_source(self) -> UeventSource:
        if self._source is not None:
            return self._source
        size = self.settings.receive_buffer
        fd = self._listen_fd(KERNEL_FD_NAME)
        try:
            sock = adopt_uevent_socket(fd, size) if fd is not None else open_uevent_socket(size)
        except (OSError, ValueError) as e:
            raise StartupError(f"cannot open the kernel uevent socket: {e}") from e
        stats = sock.statistics()
        how = "forced" if stats.receive_buffer_forced else "capped by net.core.rmem_max"
        self.log(Priority.DEBUG, Message.UEVENT_SOCKET,
                 f"Uevent socket receive buffer: {stats.receive_buffer} bytes "
                 f"({how})")
        return sock

    def _open_control(self) -> socket.socket:
        fd = self._listen_fd(CONTROL_FD_NAME)
        if fd is not None:
            return socket.socket(fileno=fd)  # systemd removes the file (RemoveOnStop=yes)
        path = self.root.path(self.settings.control_socket)
        try:
            self._bound = bind_control(path)
        except PathTaken as e:
            raise StartupError(f"cannot listen on {path}: {e}") from e
        except OSError as e:
            raise StartupError(f"cannot listen on {path}: {e.strerror or e}") from e
        return self._bound.sock

    def _take_instance_lock(self) -> InstanceLock:
        """One daemon per root (`system.instance`), before any socket is touched."""
        path = self.root.path(LOCK_FILE)
        try:
            return take_instance_lock(path)
        except AlreadyRunning as e:
            who = f"another kmodd (pid {e.pid})" if e.pid else "another kmodd"
            raise InstanceRunning(
                f"{who} is running for root {self.root.prefix or '/'}; it holds {path}. "
                "Stop it first (systemctl stop kmodd.service), or give this one another "
                "--root") from None
        except LockUnusable as e:
            raise StartupError(f"cannot take the lock that keeps kmodd to one instance: {e}") \
                from None

    def start_control(self) -> DaemonControl:
        """The control plane (io.kmodd's view of the daemon and its service), built once.

        Its code is a third of what the daemon imports; on a slow machine loading it would
        take CPU from the boot's module inits. So it is loaded when a client first connects,
        or once the coldplug burst is over, whichever comes first: an early client waits a
        moment in the socket's backlog, it is never refused.
        """
        if self.control is not None:
            return self.control
        # Imported here, not at the top: bench/bench_daemon.py's READY and coldplug figures.
        from kmodd.daemon.control.interface import admin_gid, build_service, limits_from
        from kmodd.daemon.control.state import DaemonControl

        assert self.devices is not None and self.loader is not None
        assert self.intake is not None and self._source_in_use is not None
        settings = self.settings
        control = DaemonControl(
            lifecycle=self.lifecycle, snapshots=self.snapshots, devices=self.devices,
            loader=self.loader, intake=self.intake, source=self._source_in_use,
            reporter=self.reporter, live=self.kernel.modules, root=self.root,
            devices_root=self.devices_root, reload=self.reload)
        control.service = build_service(control, self.hub, version=__version__,
                                        admin_group=settings.control_group,
                                        limits=limits_from(settings), log=self.log)
        if settings.control_group and admin_gid(settings.control_group) is None:
            self.log(Priority.WARNING, Message.CONFIG_IGNORED,
                     f"Unknown control_group {settings.control_group!r}: "
                     "only root may load, unload and reload")
        self.control = control
        self._control_wanted.set()
        return control

    async def _serve_control(self, listener: socket.socket) -> None:
        """Serve io.kmodd on `listener` once the control plane is wanted (`start_control`)."""
        loop = asyncio.get_running_loop()
        fd = listener.fileno()
        loop.add_reader(fd, self._control_wanted.set)  # a client is knocking
        try:
            await self._control_wanted.wait()
        finally:
            loop.remove_reader(fd)
        service = self.start_control().service
        assert service is not None
        await service.serve(listener)

    def _tell_snapshot(self, snapshot: Snapshot, verb: str) -> None:
        if verb != "Decoded":  # the same configuration as the mapped snapshot's: told then
            for problem in snapshot.problems:
                # kmod's words already say "ignoring"
                self.log(Priority.WARNING, Message.CONFIG_IGNORED, problem)
        what = f"{snapshot.modules} modules" if snapshot.decoded else "index mapped"
        self.log(Priority.INFO, TOLD_SNAPSHOT[verb],
                 f"{verb} module index generation {snapshot.generation} from "
                 f"{snapshot.moddir} ({what}, {len(snapshot.config.files)} "
                 f"configuration files, {snapshot.build_seconds * 1000:.0f} ms)",
                 "reload" if verb == "Loaded" else "index")

    # -- reloading ------------------------------------------------------------------------------

    async def reload(self, reason: str) -> Snapshot | str:
        """Build a new snapshot off the loop and swap it in; on failure keep the old one."""
        self.notifier.reloading()
        self.lifecycle.state = DaemonState.RELOADING
        self.log(Priority.INFO, Message.RELOAD_STARTED,
                 f"Reloading the module index and configuration ({reason})")
        result = await self.snapshots.reload()
        current = self.snapshots.current
        if isinstance(result, SnapshotFailure):
            if self.lifecycle.degraded_reason is not None:
                self.lifecycle.degraded_reason = result.reason  # still no usable index
            self.lifecycle.state = self.lifecycle.settled_state
            self.log(Priority.ERR, Message.RELOAD_FAILED,
                     f"Reload failed, keeping generation {current.generation}: "
                     f"{result.reason}", "reload")
            self.notifier.ready(status=self._status_text() if self.lifecycle.degraded_reason
                                else f"Reload failed: {result.reason}")
            return result.reason
        self._tell_snapshot(result, "Loaded")
        self._leave_degraded(result)
        self.lifecycle.state = self.lifecycle.settled_state
        self.notifier.ready(status=self._status_text())
        return result

    def _degrade(self, reason: str, message: str) -> None:
        """No usable module index: keep listening, say so (once at error level, in status and
        STATUS=) and load again once a reload succeeds (`_leave_degraded`)."""
        if self.lifecycle.degraded_reason is None:
            self.log(Priority.ERR, Message.DEGRADED_ENTERED, message, "degraded")
        self.lifecycle.degraded_reason = reason
        if self.lifecycle.state is DaemonState.RUNNING:
            self.lifecycle.state = DaemonState.DEGRADED

    def _lookup_met_damage(self, reason: str) -> None:
        """A lookup met damage in an index file not yet checked whole (alias and symbols are
        checked in the decode after the coldplug burst): degraded, and the device is left
        for the resync that a good reload sets off."""
        self._degrade(reason, f"The module index is damaged: {reason}; devices whose lookup "
                              "meets the damage are left until a reload succeeds")
        self.notifier.status(self._status_text())

    def _leave_degraded(self, snapshot: Snapshot) -> None:
        """A usable index again: devices decided without one are handled again (a resync
        finds them: their records, made on the empty generation 0, are forgotten)."""
        if self.lifecycle.degraded_reason is None:
            return
        self.lifecycle.degraded_reason = None
        self.log(Priority.NOTICE, Message.DEGRADED_LEFT,
                 f"Leaving degraded mode: module index generation "
                 f"{snapshot.generation} is usable", "degraded")
        if self.devices is not None and self.intake is not None:
            records = self.devices.table.devices
            for devpath in [d for d, r in records.items() if r.generation == 0]:
                del records[devpath]
            self.intake.request_resync("the module index is usable again")

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload("SIGHUP")

    async def _reload_on_change(self) -> None:
        targets = config_targets(self.root, self.snapshots.real_moddir)
        try:
            watcher = ChangeWatcher(targets, self.settings.reload_debounce,
                                    self.settings.reload_max_delay)
        except OSError as e:
            self.log(Priority.WARNING, Message.WATCH_FAILED,
                     f"Cannot watch modprobe.d and the module index ({e}); "
                     "reload with SIGHUP or `kmodctl reload`")
            return
        try:
            async for change in watcher:
                paths = sorted(change.paths)
                shown = ", ".join(paths[:CHANGED_PATHS_SHOWN])
                if len(paths) > CHANGED_PATHS_SHOWN:
                    shown += f" and {len(paths) - CHANGED_PATHS_SHOWN} more"
                if change.overflow:
                    shown = (shown + "; " if shown else "") + "inotify lost events"
                await self.reload(f"changed: {shown}")
        finally:
            watcher.close()

    # -- status ------------------------------------------------------------------------------------

    def _status_text(self) -> str:
        devices = self.devices
        count = len(devices.table.devices) if devices is not None else 0
        state = "coldplug done" if self.lifecycle.coldplug_done else "coldplug running"
        snapshot = self.snapshots.current
        index = "decoded" if snapshot.decoded else "mapped"
        degraded = self.lifecycle.degraded_reason
        return ((f"Degraded ({degraded}): " if degraded else "")
                + f"{count} devices, generation {snapshot.generation} ({index}), {state}"
                + (" (dry run)" if self.settings.dry_run else ""))

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _coldplug(self) -> None:
        """Coldplug, then decode the index.

        Coldplug runs on the index as mapped: a boot's hundred-odd lookups cost less there
        than decoding the whole index first (on a slow or single CPU the decode would delay
        every module of the boot). The decoded index, which answers a long run of new
        modaliases faster, is built once the boot's burst is over, in a thread, and swapped
        in.
        """
        assert self.intake is not None and self.devices is not None
        if self.settings.coldplug:
            started = time.monotonic()
            fed = await self.intake.scan(Origin.COLDPLUG, self.devices.expect)
            self.devices.expected_fed()
            await self.devices.wait_expected()
            elapsed = (time.monotonic() - started) * 1000
            self.log(Priority.INFO, Message.COLDPLUG_DONE,
                     f"Coldplug done: {fed} devices in {elapsed:.0f} ms",
                     "coldplug")
        self.lifecycle.coldplug_done = True
        self.notifier.status(self._status_text())
        await self._until_quiet()
        self._control_wanted.set()
        decoded = await self.snapshots.decode()
        if isinstance(decoded, SnapshotFailure):
            # The start-up snapshot checked modules.dep.bin only: the rest is damaged, and
            # lookups that reach the damage fail until a reload succeeds.
            self._degrade(decoded.reason, f"The module index is damaged, lookups stay on "
                                          f"the files as read: {decoded.reason}")
            self.notifier.status(self._status_text())
        elif not self.snapshots.current.empty and self.settings.index_in_memory:
            self._tell_snapshot(decoded, "Decoded")
            self.notifier.status(self._status_text())
        self.coldplugged.set()

    async def _static_lists(self, loaded_before: bool) -> None:
        """Load what modules-load.d, `modules_load=` and /etc/modules name, alongside
        coldplug (`daemon.modulesload`); read in a thread (a few small files). Once per
        boot: `loaded_before`, an earlier instance did, and this one only notes them."""
        assert self.loader is not None and self.devices is not None
        # Imported here, with modules_load = yes only (bench/bench_daemon.py's READY).
        from kmodd.daemon.modulesload import StaticLists
        from kmodd.system.modulesload import read_lists

        root = self.root
        lists = await self.system_pool.run(lambda: read_lists(root))
        static = StaticLists(self.snapshots, self.loader, self.devices.live, self.reporter,
                             self.devices.table, self.devices.teller, self.root,
                             dry_run=self.settings.dry_run)
        if loaded_before:
            static.remember(lists)
            self.log(Priority.INFO, Message.PREVIOUS_INSTANCE,
                     f"modules-load.d: {len(lists.modules)} listed modules were loaded by an "
                     "earlier kmodd of this boot; not loading them again")
            return
        await static.run(lists)
        if not self.settings.dry_run:
            problem = mark_lists_loaded(root)
            if problem is not None:
                self.log(Priority.WARNING, Message.RECORDS_FAILED,
                         f"Cannot note that the lists are loaded ({problem}): a restart of "
                         "kmodd in this boot loads them again")

    async def _until_quiet(self) -> None:
        """Wait for the end of the burst that coldplug set off (see DECODE_QUIET): the
        decode is seconds of CPU on a small machine, which module inits need more."""
        assert self.intake is not None and self.loader is not None
        intake, loader = self.intake, self.loader
        now = time.monotonic()
        deadline, quiet_since = now + DECODE_WAIT_MAX, now
        seen = intake.statistics().queued
        while now < deadline:
            await asyncio.sleep(DECODE_QUIET / 4)
            now = time.monotonic()
            counters = intake.statistics()
            if counters.queued != seen or counters.depth or loader.loading():
                seen, quiet_since = counters.queued, now
            elif now - quiet_since >= DECODE_QUIET:
                return

    def _on_resync(self, reason: str, fed: int) -> None:
        self.log(Priority.WARNING, Message.RESYNC,
                 f"Resynchronised from sysfs ({reason}): {fed} devices "
                 "queued again", "resync")

    # -- running --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    async def run(self) -> None:
        """Run until asked to stop; raises StartupError when a socket cannot be opened, and
        InstanceRunning when another daemon runs for the same root."""
        self._instance = self._take_instance_lock()
        try:
            await self._run_locked()
        finally:
            # Threads stuck in a reload's read are daemon threads: not waited for. Explain
            # workers were killed when their handlers were cancelled; none may start now.
            self.system_pool.shutdown()
            if self.control is not None:
                self.control.explainer.close()
            self._instance.release()
            self._instance = None

    def _kernel_request_modules(self, alias: str, *, live_too: bool = False) -> frozenset[str]:
        """The modules a kernel request for `alias` would load now (not live, not built in;
        `live_too`: live ones as well, for a request of the past)."""
        skipped = (Outcome.BUILTIN,) if live_too else (Outcome.BUILTIN, Outcome.ALREADY_LOADED)
        try:
            resolution = decide(self.snapshots.current.resolver(), self.kernel.modules, alias)
        except Exception:  # a damaged index: the request's loads go unpaired
            return frozenset()
        return frozenset(c.name for c in resolution.candidates if c.outcome not in skipped)

    def _attribute_boot(self, records: Records, kmsg: DevKmsg) -> None:
        """Tell more of the modules live before any kmodd from the boot's trace (the global
        buffer has the module events when the kernel command line enabled them)."""
        if not any(r.loaded_by is LoadedBy.BEFORE_START for r in records.modules.values()):
            return
        # Imported here, after READY (bench/bench_daemon.py).
        from kmodd.core.autoload.ktrace import boot_loads, switch_root_time
        from kmodd.system.tracefs import read_boot_trace

        lines = read_boot_trace(self.root)
        if not lines:
            return
        switch = switch_root_time((r.usec / 1e6, r.text) for r in kmsg.read_all())
        loads = boot_loads(lines, lambda a: self._kernel_request_modules(a, live_too=True),
                           switch)
        told = records.attribute_boot(loads)
        if told:
            self.log(Priority.INFO, Message.PREVIOUS_INSTANCE,
                     f"The boot's trace tells who loaded {told} of the modules live before "
                     "kmodd started" + ("" if switch is None else
                                        f" (the initramfs ended by {switch.time:.3f} s)"))

    def _watch_kernel_requests(self, loader: Loader, records: Records,
                               denied: tuple[str, ...]) -> KernelRequestWatch | None:
        if not self.settings.kernel_requests:
            self.lifecycle.kernel_requests = "not recorded: kernel_requests=no"
            return None
        # Imported here, after READY (bench/bench_daemon.py).
        from kmodd.daemon.kernelrequests import KernelRequestWatch

        watch = KernelRequestWatch(self.root, self.reporter, records, self.lifecycle,
                                   self._kernel_request_modules, denied,
                                   lambda name: loader.inserts.ours(name, OURS_WITHIN))
        return watch if watch.open() else None

    async def _run_locked(self) -> None:
        loop = asyncio.get_running_loop()
        # The policy first: the snapshot below reads /run/modprobe.d with it in place.
        denied: tuple[str, ...] = ()
        if not self.settings.dry_run and (self.settings.autoload_deny
                                          or os.path.lexists(self.root.path(POLICY_FILE))):
            # Imported here, with a policy to write or an old one to remove: the kernel-request
            # code is about 7 ms of imports, kept out of bench/bench_daemon.py's READY.
            from kmodd.daemon.kernelrequests import apply_policy

            denied = apply_policy(self.root, self.settings.autoload_deny, self.reporter)
        first = await self.snapshots.load_fast()
        if isinstance(first, SnapshotFailure):
            self._degrade(first.reason, f"Cannot read the module index: {first.reason}; "
                                        "no module is loaded until a reload succeeds")
        else:
            self._tell_snapshot(first, "Mapped")
        source = self._source_in_use = self._open_source()
        try:
            listener = self._open_control()
        except StartupError:
            source.close()
            raise
        settings = self.settings
        live = self.kernel.modules
        self._kmsg = DevKmsg(self.root, keep=True)
        self.loader = Loader(self.kernel, live, self._kmsg, self.root,
                             parallel=parallel_limit(settings.parallel_loads),
                             install_timeout=settings.install_timeout,
                             environ={k: v for k, v in self.setup.environ.items()
                                      if k not in PRIVATE_VARIABLES})
        self.records = Records()
        self.devices = Devices(self.snapshots, self.loader, ListedModules(live), self.reporter,
                               self.records,
                               is_loaded=lambda name: module_is_present(self.root, name),
                               static_rules=settings.static_rules, dry_run=settings.dry_run)
        self.intake = Intake(source, self.devices_root, settings.intake_queue,
                             self.devices.handled, pool=self.system_pool)
        self.intake.on_resync = self._on_resync
        self.devices.on_index_damage = self._lookup_met_damage
        self.intake.on_warning = self._uevent_rejected
        self.recovery = self._open_records(self.loader, self.devices, self._kmsg)
        kernel_requests: KernelRequestWatch | None = None
        signals: list[signal.Signals] = []
        try:
            async with asyncio.TaskGroup() as tg:
                front = [
                    tg.create_task(self.intake.run_receive(), name="receive"),
                    tg.create_task(self.intake.run_resync(), name="resync"),
                    tg.create_task(self._serve_control(listener), name="control"),
                    tg.create_task(self._reload_on_request(), name="sighup"),
                ]
                if self.recovery is not None:
                    front.append(tg.create_task(self.recovery.run(), name="recovery"))
                dispatcher = tg.create_task(self.devices.run(self.intake), name="dispatch")
                if settings.watch_config:
                    front.append(tg.create_task(self._reload_on_change(), name="inotify"))
                interval = watchdog_interval(self.setup.environ)
                if interval is not None:
                    front.append(tg.create_task(self._watchdog(interval), name="watchdog"))
                if self._install_signals:
                    for signum, handler in ((signal.SIGHUP, self.request_reload),
                                            (signal.SIGTERM, self.request_stop),
                                            (signal.SIGINT, self.request_stop)):
                        loop.add_signal_handler(signum, handler)
                        signals.append(signum)
                # Before READY=1: systemd-modules-load.service, ordered after kmodd.service,
                # checks the flag when it starts.
                taking_over = settings.modules_load and not settings.dry_run
                lists_loaded = taking_over and lists_loaded_this_boot(self.root)
                problem = announce_takeover(self.root, taking_over)
                if problem is not None:
                    self.log(Priority.WARNING, Message.CONFIG_IGNORED,
                             f"modules_load: cannot tell systemd-modules-load.service to "
                             f"stand aside ({problem}); both may load the lists")
                self.lifecycle.state = self.lifecycle.settled_state
                self.lifecycle.ready = time.monotonic()
                self.notifier.ready(status=self._status_text())
                elapsed = (self.lifecycle.ready - self.setup.started) * 1000
                self.log(Priority.INFO, Message.READY, f"Ready after {elapsed:.0f} ms"
                         + (" (dry run: nothing is loaded)" if settings.dry_run else ""),
                         "ready")
                self.ready.set()
                # The kernel's requests are read from now on: the trace instance kept those
                # made since the unit enabled it (after READY: bench/bench_daemon.py).
                if settings.kernel_requests:
                    self._attribute_boot(self.records, self._kmsg)
                kernel_requests = self._watch_kernel_requests(self.loader, self.records, denied)
                if kernel_requests is not None:
                    front.append(tg.create_task(kernel_requests.run(), name="kernel-requests"))
                if settings.modules_load:
                    front.append(tg.create_task(self._static_lists(lists_loaded),
                                                name="modules-load"))
                front.append(tg.create_task(self._coldplug(), name="coldplug"))
                await self._stop.wait()
                await self._stop_in_order(front, dispatcher)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            source.close()
            if kernel_requests is not None:
                kernel_requests.close()
            if self.recovery is not None:
                self.recovery.close()
            if self.loader.records is not None:
                self.loader.records.close()
            with contextlib.suppress(OSError):
                listener.close()
            if self._bound is not None:
                unlink_if_ours(self._bound)  # never a socket someone else put there since
            self.notifier.close()

    # -- the record of loads, and recovery -----------------------------------------------------

    def _open_records(self, loader: Loader, devices: Devices,
                      kmsg: DevKmsg) -> Recovery | None:
        """Read what the earlier instances of this boot recorded, start this one's record,
        attribute the modules live now, tell the journal, and make the recovery (None in a
        dry run: nothing is probed then)."""
        listed = self.kernel.modules.loaded_names()
        live = frozenset(listed) if isinstance(listed, list) else frozenset()
        boot_id = read_boot_id(self.root.proc("sys/kernel/random/boot_id"))
        opened = open_records(self.root.path(RECORD_FILE), boot_id, live,
                              on_failure=self._records_failed)
        loader.records = opened.records
        history = opened.history
        if opened.records.failure is not None:
            self._records_failed(opened.records.failure)
        devices.table.attribute_at_start(sorted(live), history)
        devices.table.expect_from_previous(
            {n: e.pid for n, e in history.loaded.items() if n not in live and not e.returned})
        self._tell_history(history, live)
        if self.settings.dry_run:
            return None
        # An insert the previous instance had not seen return may still be in the kernel
        # (its module not listed yet at this start): its devices are re-probed as well.
        unfinished = frozenset(n for n, e in history.loaded.items() if not e.returned)
        recovery = Recovery(self.binding, kmsg, self.reporter, opened.records,
                            live_before_start=live | unfinished, unbound=history.unbound)
        devices.on_scanned = recovery.consider
        devices.on_driver_event = recovery.driver_event
        return recovery

    @log_wrapper
    def _records_failed(self, text: str) -> None:
        self.lifecycle.records_failure = text
        self.log(Priority.WARNING, Message.RECORDS_FAILED, text)

    def _tell_history(self, history: History, live: frozenset[str]) -> None:
        for problem in history.problems:
            self.log(Priority.WARNING, Message.RECORDS_FAILED, problem)
        mine = sorted(n for n, e in history.loaded.items() if n in live)
        before = sorted(live.difference(mine))
        previous = history.previous
        if previous is not None:
            by_it = [n for n in mine if history.loaded[n].pid == previous.pid]
            unfinished = [n for n in by_it if not history.loaded[n].returned]
            lc = self.lifecycle
            lc.previous, lc.previous_modules = previous, len(by_it)
            lc.previous_unfinished = len(unfinished)
            how = "stopped" if previous.stopped else "ended without stopping"
            text = (f"The previous instance (pid {previous.pid}) {how}; it loaded {len(by_it)} "
                    f"of the {len(live)} modules live now")
            if unfinished:
                text += (f", {len(unfinished)} of them while it ended (their inserts had not "
                         f"returned): {', '.join(unfinished)}")
            if len(mine) > len(by_it):
                text += f"; earlier instances loaded {len(mine) - len(by_it)}"
            self.log(Priority.INFO if previous.stopped else Priority.WARNING,
                     Message.PREVIOUS_INSTANCE, text + ".")
            if not previous.stopped:
                # It may have died before telling the journal: one record per module it
                # made live stands in for the one it may not have written.
                for name in by_it:
                    entry = history.loaded[name]
                    where = f" for {', '.join(entry.devpaths)}" if entry.devpaths else ""
                    late = "" if entry.returned else ", which ended before the insert returned"
                    self.reporter.log(Priority.INFO, Message.LOADED_BEFORE,
                                      f"Module {name} is live: loaded by the previous instance "
                                      f"(pid {previous.pid}){where}{late}", None,
                                      KMODD_MODULE=name)
                for name, entry in sorted(history.loaded.items()):
                    if name in live or entry.pid != previous.pid or entry.returned:
                        continue
                    where = f" for {', '.join(entry.devpaths)}" if entry.devpaths else ""
                    self.reporter.log(Priority.INFO, Message.LOADED_BEFORE,
                                      f"Module {name} was being inserted by the previous "
                                      f"instance (pid {previous.pid}){where} when it ended; "
                                      "it is not live yet", None, KMODD_MODULE=name)
        if before:
            self.log(Priority.INFO, Message.PREVIOUS_INSTANCE,
                     f"{len(before)} modules were live before kmodd started (the initramfs, "
                     f"the kernel's own requests or other programs): {', '.join(before)}")

    async def _stop_in_order(self, front: list[asyncio.Task[None]],
                             dispatcher: asyncio.Task[None]) -> None:
        assert self.loader is not None
        self.lifecycle.state = DaemonState.STOPPING
        self.notifier.stopping()
        self.log(Priority.INFO, Message.STOPPING, "Stopping", "stopping")
        for task in front:  # no new events, requests or reloads from here on
            task.cancel()
        await asyncio.gather(*front, return_exceptions=True)
        # Loads still running, from uevents or from a client's Load (whose handler has gone
        # with its connection, but whose thread runs on): counted until their threads end.
        stop_timeout = self.settings.stop_timeout
        if await self.loader.wait_idle(stop_timeout):
            self.loader.commands.close()
        else:
            ended = await self.loader.end_commands(STOP_KILL_GRACE)
            now = time.monotonic()
            for command, how in ended:
                self.log(Priority.WARNING, Message.STOP_TIMEOUT,
                         f"Stopping: killed {command.kind} command for {command.module} "
                         f"(pid {command.pid} and its process group, {how}): "
                         f"'{command.command}' was still running after "
                         f"{now - command.started:.1f} s (stop_timeout {stop_timeout:g} s)",
                         "stopping")
            if ended:  # their chains end now
                await self.loader.wait_idle(STOP_KILL_GRACE)
            self.abandoned_loads = self.loader.busy
            if self.abandoned_loads:
                self.log(Priority.WARNING, Message.STOP_TIMEOUT,
                         f"Stopping with {self.abandoned_loads} module loads "
                         f"still running after {stop_timeout:g} s")
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        self.loader.shutdown(wait=self.abandoned_loads == 0)
        if self.loader.records is not None:
            # Inserts abandoned above stay `insert` records without their `done`: the next
            # instance sees them as unfinished, which they are.
            self.loader.records.stopped()
        if self.abandoned_loads == 0 and self._kmsg is not None:
            self._kmsg.close()
