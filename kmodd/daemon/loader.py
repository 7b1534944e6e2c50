"""Carry out load plans: chains in parallel up to a limit, each in order, a module never twice.

A *chain* is the probe plan of one requested module (its dependencies and softdeps first,
`core.kmod.plan.plan_probe`). Chains run in worker threads, at most `parallel` at once (the
`parallel_loads` setting), because finit_module and install commands block. Inside a thread
the plan runs through `core.kmod.plan.run_plan`, the same loop modprobe uses, so the libkmod
rules hold: already-loaded steps are skipped, EEXIST counts as success, a failing softdep is
ignored and a failing required module ends the chain. A plan is a value (each step names its
module file and whether it is built in, looked up while planning on the event loop): the
threads get values and return values, and never touch a resolver.

Two maps keep a module from being inserted twice at once (concurrent finit_module calls of
one module cost the kernel vmalloc space and fail with EBUSY or EEXIST):

* on the event loop, one chain per requested module: a second request for a module whose
  chain is running waits for that chain's result instead of planning again;
* in the threads, one insert per module name: two chains that share a dependency insert it
  once, and the second waits for the first's result. Only the insert itself is held, never a
  whole chain, so waiting cannot deadlock.

A chain asked for only by udev's static rules (sg for every SCSI device, ppdev...) is run
*in the background*: in threads whose nice value is BACKGROUND_NICE higher, so on a busy or
single CPU the kernel work of those inserts yields to the device's own driver (a USB disk's
probe, once sd_mod is live: `daemon.devices` starts such chains then). On an idle CPU it
changes nothing.

For a failed insert the kernel's log lines about the module are captured (`system.kmsg`)
and the errno is classified (`core.autoload.outcome`). Every step is timed (monotonic clock).

A chain counts as running until its *thread* ends, even when whoever asked for it stopped
waiting (a client that disconnected): a stopping daemon waits for it, and past its deadline
ends the install/remove commands still running (`end_commands`: each runs in a process group
of its own, tracked by `system.actions.CommandTracker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as E
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kmodd.core.autoload.kmsg import KmsgRecord, module_lines, texts
from kmodd.core.autoload.outcome import (
    Diagnosis,
    Outcome,
    classify_insert,
    classify_remove,
    insert_outcome,
)
from kmodd.core.kmod.plan import LiveState, Plan, ProbeFlag, Step, StepAction, run_plan
from kmodd.core.kmod.remove import RemoveOptions, remove
from kmodd.core.kmod.resolve import Module, ModuleLookupError, Resolver
from kmodd.system.actions import CommandKind, CommandTracker, RunningCommand, run_command
from kmodd.system.kernel import KernelPort, init_declined
from kmodd.system.kmsg import KmsgSource
from kmodd.system.loadrecords import LoadRecords
from kmodd.system.modstate import SysModules
from kmodd.system.priority import lower_thread_priority
from kmodd.system.root import Root

#: Chains in flight for `parallel_loads = 0`.
PARALLEL_LOADS_DEFAULT = 64
#: Seconds between checks whether an ended command's processes are gone.
COMMAND_POLL = 0.02

T = TypeVar("T")


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a thread's failure as seen: its caller may have stopped waiting for it."""
    if not future.cancelled():
        future.exception()


_FORCE_VERMAGIC = int(ProbeFlag.FORCE_VERMAGIC)  # plain ints: IntFlag operators are slow
_FORCE_MODVERSION = int(ProbeFlag.FORCE_MODVERSION)
#: How much lower the CPU priority of a background chain's thread is (nice value added).
BACKGROUND_NICE = 10



def parallel_limit(setting: int) -> int:
    """Chains run at once for the `parallel_loads` setting (0: PARALLEL_LOADS_DEFAULT).

    A finit_module can block in the kernel for seconds after its module went live: since
    Linux 5.18 it returns only once all asynchronous work queued in the kernel (async
    probes, SCSI scans) is done (do_init_module's async_synchronize_full). Booting the
    Debian kernel under QEMU, a third of the coldplug inserts took over 5 s and returned
    together. With udevd's worker count (2 per CPU + 16) such inserts held every slot and
    the independent loads behind them started 10 s late; a waiting thread costs only its
    stack, so the default lets every chain of a boot start at once.
    """
    return setting if setting > 0 else PARALLEL_LOADS_DEFAULT


@dataclass(frozen=True, slots=True)
class StepResult:
    """What became of one step of a chain."""

    module: str
    action: StepAction
    outcome: Outcome
    errno: int  # 0, or the positive errno of the failure
    options: str | None
    required: bool
    requested: bool
    started: float | None = None  # time.monotonic() around the syscall or command
    finished: float | None = None
    diagnosis: Diagnosis | None = None  # cause of a failed insert
    kernel_records: tuple[KmsgRecord, ...] = ()  # what the kernel logged about the module
    detail: str = ""  # skip reason, command status, user-space notes
    joined: bool = False  # another chain's insert of the same module was waited for
    #: When the chain this step ran in was asked of the loader (time.monotonic()): from then
    #: to `started` the module waited (for a worker thread, its dependencies' inserts).
    queued: float | None = None
    #: The step of the same chain acted on last before this one (inserted, waited for, or a
    #: command run): the dependency whose going live this one waited for; None for the first.
    after: str | None = None

    @property
    def kernel_lines(self) -> tuple[str, ...]:
        """The texts of `kernel_records`."""
        return texts(self.kernel_records)


@dataclass(frozen=True, slots=True)
class ChainResult:
    """One requested module's chain, run (or planned, in a dry run)."""

    module: str
    errno: int  # run_plan's result: 0, or the errno that ended the chain
    steps: tuple[StepResult, ...]
    started: float
    finished: float

    @property
    def failed_step(self) -> StepResult | None:
        """The step that ended the chain, if it failed."""
        if not self.errno:
            return None
        return next((s for s in reversed(self.steps)
                     if s.outcome is Outcome.FAILED and s.required), None)

    @property
    def outcome(self) -> Outcome:
        """The requested module's outcome (FAILED when a required step failed before it)."""
        if self.errno:
            failed = self.failed_step
            return failed.outcome if failed is not None else Outcome.FAILED
        mine = next((s for s in self.steps if s.requested), None)
        return mine.outcome if mine is not None else Outcome.ALREADY_LOADED


@dataclass(slots=True)
class _Attempt:
    action: StepAction
    errno: int
    started: float
    finished: float
    joined: bool = False
    kernel_records: tuple[KmsgRecord, ...] = ()
    detail: str = ""
    declined: bool = False  # EEXIST from the module's own init (see classify_insert)


@dataclass(slots=True)
class _Pending:
    done: threading.Event | None = None  # made by the first caller that waits
    result: _Attempt | None = None


@dataclass(frozen=True, slots=True)
class LoaderStatistics:
    chains_run: int
    chains_joined: int  # requests that waited for a chain already running
    inserts_joined: int  # inserts waited for instead of repeated
    busy: int  # chains whose threads are still running


class InflightInserts:
    """Module name -> the insert running now; a second caller waits for its result.

    It also remembers when each module's last successful insert ended, so a caller that found
    the module not loaded and comes in after another caller's insert of it ended is told
    EEXIST at once (what the kernel would answer, after reading the whole file again).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Pending] = {}
        self._inserted: dict[str, float] = {}  # module -> time.monotonic() its insert ended
        self._ended: dict[str, float] = {}  # module -> when its last insert ended, any result
        self.joined = 0  # inserts that were waited for instead of repeated

    def run(self, name: str, insert: Callable[[], _Attempt],
            asked: float) -> tuple[_Attempt, bool]:
        """Run `insert` unless one for `name` is running; (its result, whether we waited).

        `asked`: when the caller found `name` not loaded (time.monotonic()).
        """
        with self._lock:
            pending = self._running.get(name)
            if pending is None:
                ended = self._inserted.get(name)
                if ended is not None and ended >= asked:
                    return _Attempt(StepAction.INSERT, E.EEXIST, ended, ended,
                                    detail="loaded meanwhile by another chain"), False
                pending = self._running[name] = _Pending()
                event = None
            else:
                self.joined += 1
                event = pending.done
                if event is None:
                    event = pending.done = threading.Event()
        if event is not None:
            event.wait()
            assert pending.result is not None
            return pending.result, True
        result: _Attempt | None = None
        try:
            result = insert()
            return result, False
        finally:
            if result is None:  # a bug raised in the insert; waiters see an I/O error
                now = time.monotonic()
                result = _Attempt(StepAction.INSERT, E.EIO, now, now, detail="internal error")
            with self._lock:
                del self._running[name]
                pending.result = result
                if result.errno == 0:
                    self._inserted[name] = result.finished
                self._ended[name] = time.monotonic()
                event = pending.done
            if event is not None:
                event.set()

    def names(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._running)

    def ours(self, name: str, within: float) -> bool:
        """Is an insert of `name` running, or did one end less than `within` seconds ago?
        (A module's `add` uevent is sent while its insert runs: it is ours then.)"""
        with self._lock:
            if name in self._running:
                return True
            ended = self._ended.get(name)
        return ended is not None and time.monotonic() - ended < within


class _ChainActions:
    """`core.kmod.plan.Actions` for one chain, in its worker thread; records every step."""

    def __init__(self, loader: Loader, kernel_blacklist: frozenset[str], dry_run: bool,
                 devpath: str | None, tell: Callable[[StepResult], None] | None,
                 queued: float | None = None) -> None:
        self._loader = loader
        self._queued = queued
        self._after: str | None = None  # the last step acted on (StepResult.after)
        self._kernel_blacklist = kernel_blacklist
        self._dry_run = dry_run
        self._devpath = devpath
        self._tell = tell
        self._attempt: _Attempt | None = None
        self.steps: list[StepResult] = []

    def _add(self, step: StepResult) -> None:
        self.steps.append(step)
        if self._tell is not None:
            self._tell(step)

    def insert(self, step: Step, options: str, flags: ProbeFlag) -> int:
        loader = self._loader
        path = step.path
        if path is None:
            now = time.monotonic()
            self._attempt = _Attempt(StepAction.INSERT, E.ENOENT, now, now,
                                     detail=f"no file is known for module {step.name}")
            return E.ENOENT
        # run_plan has just found the module not loaded; another chain's insert of it that
        # ends from now on must not cost a second finit_module (InflightInserts).
        asked = time.monotonic()
        real = loader.root.path(path) if path.startswith("/") else path

        def attempt() -> _Attempt:
            ledger = loader.records
            if ledger is not None:  # before the syscall: a kill inside it is still known
                ledger.inserting(step.name, self._devpath)
            started = time.monotonic()
            with loader.kmsg.watch() as watch:
                result = loader.kernel.insert(
                    real, options,
                    force_vermagic=bool(int(flags) & _FORCE_VERMAGIC),
                    force_modversion=bool(int(flags) & _FORCE_MODVERSION))
                finished = time.monotonic()
                if ledger is not None:
                    ledger.inserted(step.name, result.errno)
                records: tuple[KmsgRecord, ...] = ()
                if not result.ok:
                    records = module_lines(watch.records(), step.name)
            return _Attempt(StepAction.INSERT, result.errno, started, finished,
                            kernel_records=records, detail="; ".join(result.notes),
                            declined=init_declined(loader.kernel.modules, step.name, result))

        done, joined = loader.inserts.run(step.name, attempt, asked)
        if joined:
            done = _Attempt(done.action, done.errno, done.started, done.finished, True,
                            done.kernel_records, done.detail, done.declined)
        self._attempt = done
        if done.errno == 0:
            return E.EEXIST if joined else 0
        return done.errno

    def run_install(self, step: Step, command: str) -> int:
        loader = self._loader
        started = time.monotonic()
        result = run_command(command, step.name, loader.environ, loader.install_timeout,
                             loader.commands, CommandKind.INSTALL)
        finished = time.monotonic()
        if result.status is None:
            detail = f"install command '{command}': {result.error}"
        else:
            detail = f"install command '{command}' exited with status {result.status}"
        if result.output:
            detail += f"; output: {result.output.strip()}"
        # libkmod's command_do: any failure of the command is EINVAL.
        errno = 0 if result.status == 0 else E.EINVAL
        self._attempt = _Attempt(StepAction.INSTALL, errno, started, finished, detail=detail)
        return errno

    def on_step(self, step: Step, err: int) -> None:
        attempt, self._attempt = self._attempt, None
        name = step.name
        if attempt is None:
            if err == E.EEXIST:
                action, outcome, detail = (StepAction.SKIP, Outcome.ALREADY_LOADED,
                                           "already in the kernel")
            else:  # a dry run: nothing was done
                action, outcome, detail = step.action, Outcome.PLANNED, step.command or ""
            self._add(StepResult(name, action, outcome, 0, step.options, step.required,
                                 step.requested, detail=detail))
            return
        diagnosis = None
        if attempt.action is StepAction.INSTALL:
            outcome = Outcome.COMMAND_RAN if attempt.errno == 0 else Outcome.FAILED
        else:
            outcome = insert_outcome(attempt.errno, joined=attempt.joined,
                                     kernel_denied=name in self._kernel_blacklist,
                                     declined=attempt.declined)
            if outcome is Outcome.FAILED:
                diagnosis = classify_insert(attempt.errno, declined=attempt.declined)
        self._add(StepResult(
            name, attempt.action, outcome, attempt.errno, step.options, step.required,
            step.requested, started=attempt.started, finished=attempt.finished,
            diagnosis=diagnosis, kernel_records=attempt.kernel_records, detail=attempt.detail,
            joined=attempt.joined, queued=self._queued, after=self._after))
        self._after = name


class _RemovalIO:
    """`core.kmod.remove.RemoveIO` for the daemon: deletes through the kernel port, collects
    text."""

    def __init__(self, loader: Loader, modules: SysModules, dry_run: bool) -> None:
        self._loader = loader
        self._modules = modules
        self._dry_run = dry_run
        self.messages: list[str] = []
        self.removed: list[tuple[str, int]] = []  # (module, errno) for every delete_module

    def log(self, message: str) -> None:
        self.messages.append(message.rstrip("\n"))

    def refcnt(self, name: str) -> int:
        return self._modules.refcnt(name)

    def holders(self, name: str) -> list[str] | None:
        return self._modules.holders(name)

    def remove_module(self, mod: Module) -> int:
        if self._dry_run:
            self.removed.append((mod.name, 0))
            return 0
        errno = self._loader.kernel.delete(mod.name)
        self.removed.append((mod.name, errno))
        if errno == 0 and self._loader.records is not None:
            self._loader.records.removed(mod.name)
        if errno:
            why = classify_remove(errno).explanation
            self.messages.append(f"could not remove '{mod.name}': {why}")
        return errno

    def run_remove_command(self, mod: Module, command: str) -> int:
        if self._dry_run:
            self.removed.append((mod.name, 0))
            return 0
        loader = self._loader
        result = run_command(command.replace("$CMDLINE_OPTS", ""), mod.name, loader.environ,
                             loader.install_timeout, loader.commands, CommandKind.REMOVE)
        if result.status != 0:
            self.messages.append(f"Error running remove command for {mod.name}")
            return result.status or 1
        self.removed.append((mod.name, 0))
        return 0


@dataclass(frozen=True, slots=True)
class RemovalResult:
    errno: int  # core.kmod.remove's result: 0 or an errno
    removed: tuple[tuple[str, int], ...]
    messages: tuple[str, ...]


class Loader:
    """Runs chains in a bounded pool of threads, with both in-flight maps."""

    def __init__(self, kernel: KernelPort, live: LiveState, kmsg: KmsgSource, root: Root, *,
                 parallel: int, install_timeout: float, environ: Mapping[str, str]) -> None:
        self.kernel = kernel
        self.live = live
        self.kmsg = kmsg
        self.root = root
        self.parallel = parallel
        self.install_timeout = install_timeout
        self.environ = dict(environ)
        self.inserts = InflightInserts()
        #: The crash-safe record of inserts and removals (`system.loadrecords`), if kept.
        self.records: LoadRecords | None = None
        #: install/remove commands running now: a stop that cannot wait ends them.
        self.commands = CommandTracker()
        self._executor = ThreadPoolExecutor(max_workers=parallel,
                                            thread_name_prefix="kmodd-load")
        self._background = ThreadPoolExecutor(max_workers=parallel,
                                              thread_name_prefix="kmodd-load-bg",
                                              initializer=lower_thread_priority,
                                              initargs=(BACKGROUND_NICE,))
        self._chains: dict[str, asyncio.Future[ChainResult]] = {}
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._chains_run = 0
        self._chains_joined = 0

    # -- chains -------------------------------------------------------------------------

    def _run_blocking(self, plan: Plan, flags: ProbeFlag,
                      kernel_blacklist: frozenset[str], dry_run: bool, devpath: str | None,
                      tell: Callable[[StepResult], None] | None,
                      queued: float | None = None) -> ChainResult:
        started = time.monotonic()
        actions = _ChainActions(self, kernel_blacklist, dry_run, devpath, tell, queued)
        if dry_run:
            flags |= ProbeFlag.DRY_RUN
        errno = run_plan(self.live, plan, flags, None if dry_run else actions,
                         on_step=actions.on_step)
        return ChainResult(plan.name, errno, tuple(actions.steps), started,
                           time.monotonic())

    async def run_chain(self, plan: Plan, flags: ProbeFlag, *,
                        kernel_blacklist: frozenset[str] = frozenset(), dry_run: bool = False,
                        background: bool = False, devpath: str | None = None,
                        on_step: Callable[[StepResult], None] | None = None
                        ) -> tuple[ChainResult, bool]:
        """Run one requested module's plan; (result, True) when another run was waited for.

        `background`: in a thread of lower CPU priority (see the module's description). A
        request that finds the module's chain running waits for it at that chain's pace.
        `devpath`: the device the chain is for (the record file names it). `on_step`: called
        on the event loop with each step's result as soon as the step ends (a joined run
        calls nothing: its steps are told to whoever started it).
        """
        name = plan.name
        running = self._chains.get(name)
        if running is not None:
            self._chains_joined += 1
            return await asyncio.shield(running), True
        loop = asyncio.get_running_loop()
        queued = time.monotonic()
        future: asyncio.Future[ChainResult] = loop.create_future()
        self._chains[name] = future
        tell = None
        if on_step is not None:
            def tell(step: StepResult) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody hears
                    loop.call_soon_threadsafe(on_step, step)
        try:
            result = await self._in_thread(
                self._background if background else self._executor,
                lambda: self._run_blocking(plan, flags, kernel_blacklist, dry_run,
                                           devpath, tell, queued))
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(e)
                future.exception()  # retrieved here: joiners re-raise it, nobody else must
            raise
        finally:
            del self._chains[name]
        self._chains_run += 1
        future.set_result(result)
        return result, False

    async def _in_thread(self, executor: ThreadPoolExecutor, work: Callable[[], T]) -> T:
        """`work()` in a thread of `executor`, counted busy until the *thread* is done.

        A caller that is cancelled (a client that went away, a stopping daemon) stops
        waiting, but the thread runs on, inserting or running a command: a stop must still
        wait for it (`wait_idle`) and end its command (`end_commands`).
        """
        loop = asyncio.get_running_loop()
        self._enter()
        try:
            done = executor.submit(work)
        except BaseException:
            self._leave()
            raise

        def left(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody counts
                loop.call_soon_threadsafe(self._leave)

        done.add_done_callback(left)
        waited = asyncio.wrap_future(done, loop=loop)
        waited.add_done_callback(_retrieved)
        return await asyncio.shield(waited)

    def _enter(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    # -- removal ----------------------------------------------------------------------------

    def _remove_blocking(self, resolver: Resolver, name: str, dry_run: bool) -> RemovalResult:
        modules = self.kernel.modules
        io = _RemovalIO(self, modules, dry_run)
        try:
            errno = remove(resolver, self.live, io, name, 0, RemoveOptions())
        except ModuleLookupError as e:
            errno = e.errno
        return RemovalResult(errno, tuple(io.removed), tuple(io.messages))

    async def remove(self, resolver: Resolver, name: str, *,
                     dry_run: bool = False) -> RemovalResult:
        """`modprobe -r name` (core.kmod.remove), in a worker thread (`dry_run`: decide only)."""
        return await self._in_thread(
            self._executor, lambda: self._remove_blocking(resolver, name, dry_run))

    # -- state --------------------------------------------------------------------------------

    def statistics(self) -> LoaderStatistics:
        return LoaderStatistics(self._chains_run, self._chains_joined, self.inserts.joined,
                                self._busy)

    def loading(self) -> frozenset[str]:
        """Modules with a chain or an insert in progress."""
        return frozenset(self._chains) | self.inserts.names()

    @property
    def busy(self) -> int:
        return self._busy

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no chain runs (True), or `timeout` seconds pass (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def end_commands(self, grace: float) -> list[tuple[RunningCommand, str]]:
        """End every install/remove command still running, and start no more: SIGTERM to
        each command's process group, then SIGKILL to what is left after `grace` seconds.
        The commands ended, each with how ("SIGTERM" or "SIGKILL"), once they are gone.

        SIGTERM first, because the stop deadline is the daemon's, not the command's fault:
        a script may remove what it half made. SIGKILL after a short grace, because the stop
        must end within its own deadline whatever the command does with SIGTERM.
        """
        tracker = self.commands
        tracker.close()
        termed = tracker.signal_all(signal.SIGTERM)
        if not termed:
            return []
        deadline = time.monotonic() + grace
        while any(map(tracker.alive, termed)) and time.monotonic() < deadline:
            await asyncio.sleep(COMMAND_POLL)
        killed = {c.pid for c in termed if tracker.alive(c)}
        for command in termed:
            if command.pid in killed:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(command.pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while any(tracker.alive(c) for c in termed if c.pid in killed) \
                and time.monotonic() < deadline:
            await asyncio.sleep(COMMAND_POLL)  # SIGKILL is delivered asynchronously
        return [(c, "SIGKILL" if c.pid in killed else "SIGTERM") for c in termed]

    def shutdown(self, *, wait: bool) -> None:
        """Stop the worker threads (`wait`: after the running chains finish)."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._background.shutdown(wait=wait, cancel_futures=True)
