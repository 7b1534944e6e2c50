"""The daemon behind `io.kmodd`: the `ControlState` the control socket's handlers call.

Reading methods build the interface's views from the device and module tables
(`daemon.devices`), the intake and socket counters and the current snapshot. `Why` and
`Explain` also decide afresh, without loading anything, what the daemon would do now.
`Load` and `Unload` are explicit requests: modprobe's semantics (`core.autoload.decide.
MODPROBE_FLAGS`: the blacklist applies to aliases only; `core.kmod.remove` for unloading), run by
the same loader as autoloading, and told at the louder levels of an explicit request.
"""

from __future__ import annotations

import dataclasses
import errno as E
import os
import time
from collections.abc import Awaitable, Callable, Sequence

from kmodd import __version__
from kmodd.core.autoload.decide import (
    AUTOLOAD_FLAGS,
    MODPROBE_FLAGS,
    Candidate,
    Resolution,
    decide,
)
from kmodd.core.autoload.loadrecords import LoadedBy
from kmodd.core.autoload.outcome import Cause, Outcome, Request, classify_remove
from kmodd.core.explain.facts import FailedAttempt
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.core.kmod.normalize import modname_normalize
from kmodd.core.kmod.plan import LiveState, StepAction, initstate
from kmodd.core.kmod.resolve import ModuleLookupError, Resolver
from kmodd.daemon.control.interface import INTERFACE, ReloadFailed
from kmodd.daemon.control.views import (
    CandidateView,
    DeviceView,
    ExplanationView,
    LoadResultView,
    ModuleState,
    ModuleView,
    PlanStepView,
    PreviousInstanceView,
    ReprobeView,
    StatisticsView,
    StatusView,
    WhyView,
)
from kmodd.daemon.control.words import chain_facts, chain_words, step_views
from kmodd.daemon.devices import Devices
from kmodd.daemon.intake import Intake
from kmodd.daemon.lifecycle import Lifecycle
from kmodd.daemon.loader import Loader
from kmodd.daemon.records import ChainRecord, DeviceRecord, ModuleRecord
from kmodd.daemon.recovery import Reprobe
from kmodd.daemon.report import NOWHERE, Facts, Reporter, describe
from kmodd.daemon.snapshot import Snapshot, Snapshots
from kmodd.daemon.varlink import VarlinkError, VarlinkService
from kmodd.system.explainer import ExplainBusy, Explainer, ExplainFailed, ExplainTimeout
from kmodd.system.moddb import read_file
from kmodd.system.netlink import UeventSource
from kmodd.system.root import Root
from kmodd.system.sysfs import device_details

#: Words for where a lookup found its modules (`resolve.LOOKUP_SOURCES`).
SOURCE_WORDS = {
    "config-alias": "an alias line in modprobe.d",
    "modules.dep": "its own name in modules.dep",
    "modules.symbols": "modules.symbols",
    "install-command": "an install or remove line in modprobe.d",
    "modules.alias": "modules.alias (the module's own MODULE_DEVICE_TABLE)",
    "modules.builtin": "modules.builtin",
    "modules.builtin.alias": "modules.builtin.alias",
}


def _usec(reporter: Reporter, t: float | None) -> int | None:
    return None if t is None else reporter.usec(t)


class DaemonControl:
    """`ControlState` over the running daemon's parts."""

    def __init__(self, *, lifecycle: Lifecycle, snapshots: Snapshots, devices: Devices,
                 loader: Loader, intake: Intake, source: UeventSource, reporter: Reporter,
                 live: LiveState, root: Root, devices_root: Root,
                 reload: Callable[[str], Awaitable[Snapshot | str]]) -> None:
        self.lifecycle = lifecycle
        self.snapshots = snapshots
        self.records = devices.table
        self.teller = devices.teller
        self.loader = loader
        self.intake = intake
        self.source = source
        self.reporter = reporter
        self.live = live
        self.root = root
        self.devices_root = devices_root
        self._reload = reload
        self.service: VarlinkService | None = None
        #: Clients' explanations, each in a worker process of its own (system.explainer).
        self.explainer = Explainer(root.path("/"))

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> StatusView:
        lc = self.lifecycle
        return StatusView(
            version=__version__,
            state=lc.state,
            pid=os.getpid(),
            kernel_release=lc.kernel_release,
            uptime_usec=self.reporter.usec(),
            ready_usec=_usec(self.reporter, lc.ready),
            coldplug_done=lc.coldplug_done,
            index_generation=self.snapshots.current.generation,
            dry_run=lc.dry_run,
            degraded_reason=lc.degraded_reason,
            previous_instance=None if lc.previous is None else PreviousInstanceView(
                lc.previous.pid, lc.previous.started, lc.previous.stopped,
                lc.previous_modules, lc.previous_unfinished),
            records_failure=lc.records_failure,
            kernel_requests=lc.kernel_requests,
        )

    def statistics(self) -> StatisticsView:
        socket = self.source.statistics()
        counters = self.intake.statistics()
        return StatisticsView(
            uevents_received=socket.received,
            uevents_accepted=socket.accepted,
            uevents_dropped={str(k): v for k, v in socket.dropped.items()},
            uevents_malformed={str(k): v for k, v in socket.malformed.items()},
            overruns=socket.overruns + counters.overflows,
            resyncs=counters.resyncs,
            devices=len(self.records.devices),
            outcomes=dict(self.reporter.outcomes),
            queue_depth=counters.depth,
            control_connections=self.service.statistics().open if self.service else 0,
        )

    # -- devices and modules ------------------------------------------------------------------

    def _device_view(self, record: DeviceRecord, details: bool) -> DeviceView:
        plan: list[PlanStepView] = []
        chained = {chain.candidate.name: chain for chain in record.chains}
        for resolution in record.resolutions:
            for candidate in resolution.candidates:
                chain = chained.get(candidate.name)
                if chain is not None and not chain.joined:
                    plan.extend(step_views(chain.result.steps))
                elif chain is not None:
                    plan.append(PlanStepView(StepAction.INSERT.value, candidate.name,
                                             chain_words(chain.result, True)))
                elif candidate.outcome is None and candidate.plan is not None:
                    plan.extend(PlanStepView(StepAction.INSERT.value, s.name, "queued", s.options)
                                for s in candidate.plan.steps)
                else:
                    plan.append(PlanStepView(StepAction.SKIP.value, candidate.name,
                                             candidate.decision))
        driver = vendor = model = None
        if details:
            found = device_details(self.devices_root, record.devpath)
            if found is not None:
                driver, vendor, model = found.driver, found.vendor, found.model
        r = self.reporter
        return DeviceView(
            devpath=record.devpath,
            subsystem=record.subsystem,
            modalias=record.modalias,
            seqnum=record.seqnum,
            candidates=record.candidates,
            plan=tuple(plan),
            outcome=record.outcome.value if record.outcome else None,
            queued_usec=r.usec(record.queued),
            started_usec=r.usec(record.started),
            finished_usec=_usec(r, record.finished),
            driver=driver,
            vendor=vendor,
            model=model,
            reprobe=None if record.reprobe is None else reprobe_view(r, record.reprobe),
        )

    def devices(self, devpath: str | None) -> Sequence[DeviceView]:
        if devpath is not None:
            record = self.records.devices.get(devpath)
            return [] if record is None else [self._device_view(record, True)]
        return [self._device_view(r, False)
                for r in sorted(self.records.devices.values(), key=lambda r: r.queued)]

    def _module_state(self, name: str) -> ModuleState:
        if name in self.loader.loading():
            return ModuleState.LOADING
        snapshot = self.snapshots.current
        if snapshot.indexes.builtin(name):
            return ModuleState.BUILTIN
        state = self.live.initstate(name)
        return ModuleState(state.value) if state is not None else ModuleState.NOT_LOADED

    def _module_view(self, record: ModuleRecord) -> ModuleView:
        r = self.reporter
        return ModuleView(
            name=record.name,
            state=self._module_state(record.name),
            outcome=record.outcome.value,
            errno=record.errno or None,
            devices=tuple(sorted(record.devices)),
            started_usec=_usec(r, record.started),
            finished_usec=_usec(r, record.finished),
            loaded_by=record.loaded_by.value if record.loaded_by is not None else None,
            loaded_by_pid=record.loaded_by_pid,
            queued_usec=_usec(r, record.queued),
            after=record.after,
            device=record.device,
        )

    def modules(self, name: str | None) -> Sequence[ModuleView]:
        if name is not None:
            name = name.replace("-", "_")
            record = self.records.modules.get(name)
            if record is not None:
                return [self._module_view(record)]
            state = self._module_state(name)
            if state is ModuleState.NOT_LOADED:
                return []
            return [ModuleView(name, state)]
        return [self._module_view(r) for _, r in sorted(self.records.modules.items())]

    # -- why and explain ------------------------------------------------------------------------

    def _resolver(self) -> tuple[Snapshot, Resolver]:
        snapshot = self.snapshots.current
        return snapshot, snapshot.resolver()

    def _candidate_views(self, snapshot: Snapshot, resolution: Resolution,
                         chains: dict[str, ChainRecord]) -> list[CandidateView]:
        views = []
        for candidate in resolution.candidates:
            source = resolution.source or "lookup"
            if source == "config-alias" and candidate.module.alias:
                source = f"config-alias {candidate.module.alias}"
            views.append(CandidateView(candidate.name, source, candidate.decision,
                                       self._reason(snapshot, candidate, chains)))
        return views

    def _reason(self, snapshot: Snapshot, candidate: Candidate,
                chains: dict[str, ChainRecord]) -> str:
        name = candidate.name
        match candidate.outcome:
            case Outcome.BUILTIN:
                return "it is built into the kernel (modules.builtin)"
            case Outcome.ALREADY_LOADED:
                return "it is already loaded"
            case Outcome.BLACKLISTED:
                return (f"blacklisted by {snapshot.config.blacklist_source(name)}; udev's "
                        "`kmod load` applies the blacklist to every name, as `modprobe -b`")
        chain = chains.get(name)
        if chain is not None:
            return chain_words(chain.result, chain.joined)
        plan = candidate.plan
        order = [s.name for s in plan.steps] if plan is not None else [name]
        return "it would be loaded: " + ", ".join(order)

    def _summary(self, resolutions: Sequence[Resolution], record: DeviceRecord | None) -> str:
        if not any(r.found for r in resolutions):
            errors = [r for r in resolutions if r.error]
            if errors:
                return f"the modalias is not a valid alias: {strerror(errors[0].error)}"
            return "no module matches: no alias line in modprobe.d and no module's alias"
        parts = []
        if record is not None and record.outcome is not None:
            parts.append(f"outcome: {record.outcome.value}")
        else:
            parts.append("not handled yet; this is what kmodd would do now")
        names = [c.name for r in resolutions for c in r.candidates]
        parts.append(f"{len(names)} module(s) considered: {', '.join(names)}")
        return "; ".join(parts)

    def why(self, target: str) -> WhyView | None:
        snapshot, resolver = self._resolver()
        if target.startswith("/"):
            record = self.records.devices.get(target)
            if record is not None:
                chains = {c.candidate.name: c for c in record.chains}
                candidates = [v for r in record.resolutions
                              for v in self._candidate_views(snapshot, r, chains)]
                summary = self._summary(record.resolutions, record)
                if record.reprobe is not None:
                    summary += f"; {record.reprobe.words}: {record.reprobe.reason}"
                return WhyView(target, target, record.modalias, tuple(candidates), summary)
            details = device_details(self.devices_root, target)
            if details is None:
                return None
            if not details.modalias:
                return WhyView(target, target, None, (),
                               "the device has no modalias: no module is loaded for it")
            modalias = details.modalias
            devpath: str | None = target
        else:
            module = self.records.modules.get(modname_normalize(target))
            if module is not None and (module.loaded_by is not None or module.listed):
                return WhyView(target, None, None, (), module_summary(module))
            modalias, devpath = target, None
        resolution = decide(resolver, self.live, modalias, AUTOLOAD_FLAGS)
        candidates = self._candidate_views(snapshot, resolution, {})
        summary = self._summary((resolution,), None)
        seen = sorted(r.devpath for r in self.records.devices.values() if r.modalias == modalias)
        if devpath is None and seen:
            summary += f"; devices with this modalias: {', '.join(seen)}"
        return WhyView(target, devpath, modalias, tuple(candidates), summary)

    def dmesg_restricted(self) -> bool:
        data = read_file(self.root.proc("sys/kernel/dmesg_restrict"))
        return data is None or data.strip() != b"0"  # unreadable: assume restricted

    async def explain(self, target: str, *, kernel_log: bool) -> ExplanationView:
        """`kmodctl explain`'s checklist over the daemon's index and configuration, with the
        daemon's own record of its last failed attempt as the failure. It runs in a worker
        process (`system.explainer`: bounded in number, time and memory). `kernel_log`: the
        caller may see kernel log lines (privileged, or dmesg is not restricted)."""
        snapshot = self.snapshots.current
        record = self.records.modules.get(modname_normalize(target))
        failure = failed_attempt(record) if record is not None else None
        if failure is not None and not kernel_log:
            failure = dataclasses.replace(failure, kmsg=())
        explainer = self.explainer
        try:
            explanation = await explainer.explain(
                target, moddir=snapshot.moddir, failure=failure,
                read_log=kernel_log and failure is None)
        except ExplainBusy:
            limits = explainer.limits
            raise VarlinkError(f"{INTERFACE}.Busy", {"reason": (
                f"kmodd is busy answering other clients' questions ({limits.workers} running, "
                f"{limits.waiting} waiting); try again in a moment")}) from None
        except ExplainTimeout:
            raise VarlinkError(f"{INTERFACE}.TimedOut", {"reason": (
                f"explaining {target} took more than {explainer.limits.deadline:g} s; "
                "gave up")}) from None
        except ExplainFailed as e:
            raise VarlinkError(f"{INTERFACE}.InternalError", {"reason": (
                f"the explanation of {target} failed: {e}")}) from None
        name = modname_normalize(target)
        reprobes = [(r.devpath, r.reprobe) for r in self.records.devices.values()
                    if r.reprobe is not None and name in r.candidates]
        return ExplanationView(explanation, seen_lines(record, target, self.reporter,
                                                       reprobes))

    # -- changing methods -----------------------------------------------------------------------

    async def load(self, modules: Sequence[str], dry_run: bool) -> Sequence[LoadResultView]:
        dry_run = dry_run or self.lifecycle.dry_run
        results: list[LoadResultView] = []
        for name in modules:
            snapshot, resolver = self._resolver()
            resolution = decide(resolver, self.live, name, MODPROBE_FLAGS)
            if not resolution.found:
                text = f"Module {name} not found in directory {snapshot.moddir}"
                self.reporter.outcome(Facts(Outcome.NOT_FOUND, key=name,
                                            errno=resolution.error or E.ENOENT),
                                      Request.EXPLICIT)
                results.append(LoadResultView(name, Outcome.NOT_FOUND.value,
                                              resolution.error or E.ENOENT, text))
                continue
            for candidate in resolution.candidates:
                results.append(await self._load_one(snapshot, resolver, candidate, dry_run))
        return results

    async def _load_one(self, snapshot: Snapshot, resolver: Resolver, candidate: Candidate,
                        dry_run: bool) -> LoadResultView:
        name = candidate.name
        outcome = candidate.outcome
        if outcome is not None or candidate.plan is None:
            outcome = outcome or Outcome.ALREADY_LOADED
            self.reporter.outcome(Facts(outcome, module=name, key=name), Request.EXPLICIT)
            return LoadResultView(name, outcome.value, None,
                                  self._reason(snapshot, candidate, {}))
        result, joined = await self.loader.run_chain(
            candidate.plan, MODPROBE_FLAGS, kernel_blacklist=snapshot.kernel_blacklist,
            dry_run=dry_run)
        chain = ChainRecord(candidate, result, joined)
        self.teller.tell_chain(chain, NOWHERE, Request.EXPLICIT)
        return LoadResultView(name, chain.outcome.value, result.errno or None,
                              describe(chain_facts(chain)), step_views(result.steps))

    async def unload(self, modules: Sequence[str]) -> Sequence[LoadResultView]:
        results: list[LoadResultView] = []
        for name in modules:
            snapshot, resolver = self._resolver()
            try:
                found = resolver.lookup(name) if name else []
            except ModuleLookupError:
                found = []
            if not found:
                self.reporter.outcome(Facts(Outcome.NOT_FOUND, key=name, errno=E.ENOENT),
                                      Request.EXPLICIT)
                results.append(LoadResultView(name, Outcome.NOT_FOUND.value, E.ENOENT,
                                              f"Module {name} not found."))
                continue
            loaded = [m for m in found if initstate(resolver, self.live, m) is not None]
            if not loaded:
                outcome = Outcome.NOT_LOADED
                self.reporter.outcome(Facts(outcome, module=found[0].name, key=name),
                                      Request.EXPLICIT)
                results.append(LoadResultView(name, outcome.value, None,
                                              f"Module {name} is not loaded"))
                continue
            started = time.monotonic()
            dry_run = self.lifecycle.dry_run
            removal = await self.loader.remove(snapshot.resolver(), name, dry_run=dry_run)
            duration = int((time.monotonic() - started) * 1_000_000)
            errno = removal.errno
            removed = [m for m, err in removal.removed if err == 0]
            if errno == 0 and dry_run:
                outcome = Outcome.PLANNED
                text = "Would remove " + ", ".join(removed) + " (dry run)"
            elif errno == 0:
                outcome = Outcome.REMOVED
                text = "Removed " + ", ".join(removed) if removed else "Nothing to remove"
            else:
                outcome = Outcome.FAILED
                text = "; ".join(removal.messages) or classify_remove(errno).explanation
            sentence = None
            if errno:
                sentence = f"Failed to remove module '{loaded[0].name}'"
            elif dry_run:
                sentence = text
            self.reporter.outcome(Facts(outcome, module=loaded[0].name, key=name,
                                        errno=errno or None, duration_usec=duration,
                                        detail="" if errno == 0 else text, sentence=sentence),
                                  Request.EXPLICIT)
            results.append(LoadResultView(name, outcome.value, errno or None, text))
        return results

    async def reload(self) -> int:
        result = await self._reload("a control request")
        if isinstance(result, str):
            raise ReloadFailed(result)
        return result.generation


def reprobe_view(reporter: Reporter, reprobe: Reprobe) -> ReprobeView:
    return ReprobeView(reprobe.result.value, reprobe.reason, reprobe.driver,
                       reprobe.errno or None, reporter.usec(reprobe.finished))


def failed_attempt(record: ModuleRecord) -> FailedAttempt | None:
    """The daemon's latest failed step for a module, as the explanation's failure."""

    step = record.step
    if step is None or step.outcome is not Outcome.FAILED:
        return None
    stage = "install command" if step.action is StepAction.INSTALL else "finit_module"
    declined = step.diagnosis is not None and step.diagnosis.cause is Cause.DECLINED
    return FailedAttempt(record.name, step.errno, stage=stage, step=step.module,
                         kmsg=step.kernel_records, options=step.options, declined=declined)


def seen_lines(record: ModuleRecord | None, target: str, reporter: Reporter,
               reprobes: Sequence[tuple[str, Reprobe]] = ()) -> tuple[str, ...]:
    """What the daemon did with a module since it started, in sentences (`reprobes`: the
    devices it drives that were re-probed)."""
    if record is None:
        return (f"kmodd has not acted on {target} since it started",)
    text = f"kmodd's last outcome for {record.name}: {record.outcome.value}"
    if record.errno:
        text += f" ({E.errorcode.get(record.errno, record.errno)})"
    if record.devices:
        text += " for " + ", ".join(sorted(record.devices))
    started = _usec(reporter, record.started)
    if started is not None:
        text += f", {started / 1e6:.3f} s after kmodd started"
        if record.finished is not None and record.started is not None:
            text += f", in {(record.finished - record.started) * 1e3:.1f} ms"
    lines = [text]
    if record.listed:
        lines.append(f"{record.name} is listed in {', '.join(record.listed)}")
    if record.loaded_by is not None:
        lines.append(f"{record.name} is live: {loaded_by_words(record)}")
    step = record.step
    if step is not None and step.detail:
        lines.append(f"{step.module}: {step.detail}")
    if record.step is None and record.outcome is Outcome.FAILED:
        lines.append(f"{record.name} was not loaded because a module it needs failed "
                     "(that module's own explanation says why)")
    for devpath, reprobe in reprobes:
        lines.append(f"{devpath}: {reprobe.words}: {reprobe.reason}")
    return tuple(lines)


def module_summary(record: ModuleRecord) -> str:
    """`kmodctl why MODULE` for a live or listed module: who made it live (or what came of
    it), the static lists that name it, and the devices it was loaded for."""
    if record.loaded_by is not None:
        text = f"{record.name} is live: {loaded_by_words(record)}"
    elif record.outcome is Outcome.BUILTIN:
        text = f"{record.name} is built into the kernel"
    else:
        text = f"{record.name} is not live: kmodd's last outcome was {record.outcome.value}"
    if record.listed:
        text += f"; listed in {', '.join(record.listed)}"
    if record.devices:
        text += f"; for {', '.join(sorted(record.devices))}"
    return text


def _by(cause: str | None) -> str:
    return f" by {cause}" if cause else ""


def loaded_by_words(record: ModuleRecord) -> str:
    """Who made a live module live, in words."""
    match record.loaded_by:
        case LoadedBy.KMODD:
            return "loaded by this kmodd"
        case LoadedBy.PREVIOUS_INSTANCE:
            return f"loaded by the previous kmodd instance (pid {record.loaded_by_pid})"
        case LoadedBy.BEFORE_START if record.cause:
            return f"live before kmodd started: loaded{_by(record.cause)}"
        case LoadedBy.BEFORE_START:
            return ("live before kmodd started (the initramfs, the kernel's own request or "
                    "another program)")
        case LoadedBy.NOT_KMODD:
            return "loaded while kmodd ran, by the kernel's own request or another program"
        case LoadedBy.KERNEL_REQUEST if record.request is not None:
            task = record.request.task.words
            when = f", {record.cause}" if record.cause else ""
            return f"requested by the kernel for {task}: {record.request.alias}{when}"
        case LoadedBy.KERNEL_REQUEST:
            return "requested by the kernel"
        case LoadedBy.INITRAMFS:
            return f"loaded in the initramfs{_by(record.cause)}"
        case _:
            return "not known"
