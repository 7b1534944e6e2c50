"""What the daemon remembers: a record per device it handled and per module it acted on or
found live, which the control socket shows (`control.state`).

A device's record holds its event, what was decided, its chains' results and times, and its
re-probe; it leaves the table when the kernel removes the device, so the table holds the
devices that exist. A module's record holds its latest outcome and attempt, the devices that
asked for it, and who made it live (`LoadedBy`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kmodd.core.autoload.decide import Candidate, Resolution
from kmodd.core.autoload.loadrecords import History, LoadedBy
from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.plan import StepAction
from kmodd.daemon.intake import Origin
from kmodd.daemon.loader import ChainResult, StepResult
from kmodd.daemon.recovery import Reprobe
from kmodd.daemon.report import Where

if TYPE_CHECKING:  # the trace parser is imported once the daemon is ready (daemon.service)
    from kmodd.core.autoload.ktrace import BootLoad, ModuleRequest

#: Which outcome names a device when several modules were involved, most telling first.
DEVICE_OUTCOME_ORDER = (
    Outcome.FAILED,
    Outcome.INSERTED,
    Outcome.COMMAND_RAN,
    Outcome.PLANNED,
    Outcome.ALREADY_LOADED,
    Outcome.BUILTIN,
    Outcome.BLACKLISTED,
    Outcome.NOT_FOUND,
)


def device_outcome(outcomes: Iterable[Outcome]) -> Outcome | None:
    """The outcome a device is shown with (see DEVICE_OUTCOME_ORDER)."""
    present = set(outcomes)
    return next((o for o in DEVICE_OUTCOME_ORDER if o in present), None)


@dataclass(slots=True)
class ChainRecord:
    """A chain as a device saw it: its own run, or one it waited for."""

    candidate: Candidate
    result: ChainResult
    joined: bool

    @property
    def outcome(self) -> Outcome:
        outcome = self.result.outcome
        if self.joined and outcome is Outcome.INSERTED:
            return Outcome.ALREADY_LOADED
        return outcome


@dataclass(slots=True)
class DeviceRecord:
    """One device: its event, what was decided, what came of it, and when."""

    devpath: str
    subsystem: str
    modalias: str | None
    seqnum: int
    origin: Origin
    queued: float
    started: float
    generation: int
    resolutions: tuple[Resolution, ...] = ()
    chains: list[ChainRecord] = field(default_factory=list)
    finished: float | None = None
    outcome: Outcome | None = None
    reprobe: Reprobe | None = None  # the re-probe of a device left unbound (daemon.recovery)
    #: The event replays a device that already existed (a scan's, or a synthetic uevent:
    #: `udevadm trigger`, SYNTH_UUID): the kernel did not probe it just now.
    replayed: bool = False

    def outcomes(self) -> list[Outcome]:
        out: list[Outcome] = []
        for resolution in self.resolutions:
            if not resolution.found:
                out.append(Outcome.FAILED if resolution.error else Outcome.NOT_FOUND)
            for c in resolution.candidates:
                if c.outcome is not None:
                    out.append(c.outcome)
        out.extend(chain.outcome for chain in self.chains)
        return out

    @property
    def where(self) -> Where:
        return Where(self.devpath, self.modalias, self.seqnum or None)

    @property
    def candidates(self) -> tuple[str, ...]:
        names: list[str] = []
        for resolution in self.resolutions:
            names.extend(c.name for c in resolution.candidates if c.name not in names)
        return tuple(names)


@dataclass(slots=True)
class ModuleRecord:
    """A module the daemon acted on or decided about: its latest outcome."""

    name: str
    outcome: Outcome
    errno: int = 0
    devices: set[str] = field(default_factory=set)
    started: float | None = None  # the latest attempt, time.monotonic() around finit_module
    finished: float | None = None
    #: Of that attempt: when its chain was asked for (from then to `started` it waited), the
    #: module it waited for last (StepResult.after), and the device its chain was run for.
    queued: float | None = None
    after: str | None = None
    device: str | None = None
    step: StepResult | None = None  # the latest attempt (insert or command), for explain
    loaded_by: LoadedBy | None = None  # who made it live (None: not live, or not known)
    loaded_by_pid: int | None = None  # the earlier instance, for PREVIOUS_INSTANCE
    #: The static lists' places that name it (`/etc/modules-load.d/foo.conf:3`, ...).
    listed: tuple[str, ...] = ()
    #: The kernel's request that made it live (KERNEL_REQUEST, KERNEL_BOOT, INITRAMFS).
    request: ModuleRequest | None = None
    #: What else is known of who loaded it before kmodd (INITRAMFS...: the task, a file).
    cause: str | None = None


class Records:
    """The device table and the module table."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceRecord] = {}
        self.modules: dict[str, ModuleRecord] = {}
        #: Modules an earlier instance was inserting when it ended, not live at this start
        #: (their inserts may still finish in the kernel): module -> that instance's pid.
        self._expected: dict[str, int] = {}

    def module(self, name: str, outcome: Outcome) -> ModuleRecord:
        """The module's record, made with `outcome` if there is none yet."""
        record = self.modules.get(name)
        if record is None:
            record = self.modules[name] = ModuleRecord(name, outcome)
        return record

    def note_module(self, name: str, outcome: Outcome, devpath: str | None) -> None:
        """A decision about a module (skipped, blacklisted...) or a chain waited for."""
        record = self.modules.get(name)
        if record is None:
            record = self.modules[name] = ModuleRecord(name, outcome)
        elif record.step is None or outcome is not Outcome.ALREADY_LOADED:
            record.outcome = outcome
        if devpath is not None:
            record.devices.add(devpath)

    def note_step(self, step: StepResult, devpath: str | None) -> None:
        """A step acted on: the latest attempt, and who made the module live."""
        record = self.module(step.module, step.outcome)
        if devpath is not None:
            record.devices.add(devpath)
        if step.action is StepAction.SKIP and record.step is not None:
            return  # keep the attempt that loaded it
        record.outcome = step.outcome
        record.errno = step.errno
        if step.outcome is Outcome.INSERTED or step.outcome is Outcome.COMMAND_RAN:
            record.loaded_by, record.loaded_by_pid = LoadedBy.KMODD, None
            record.request = record.cause = None
        if step.started is not None:
            if (step.joined and record.step is not None and not record.step.joined
                    and record.step.started == step.started):
                return  # a chain that waited for this very insert: keep the inserter's timeline
            record.started, record.finished = step.started, step.finished
            record.queued, record.after, record.device = step.queued, step.after, devpath
            record.step = step

    def note_listed(self, name: str, outcome: Outcome, places: Iterable[str]) -> None:
        """A module a static list names (modules-load.d, `modules_load=`, /etc/modules)."""
        record = self.module(name, outcome)
        record.listed = tuple(dict.fromkeys((*record.listed, *places)))

    def note_failed_chain(self, name: str, errno: int, devpath: str | None) -> None:
        """The requested module was not loaded because a step before it failed."""
        record = self.module(name, Outcome.FAILED)
        record.outcome, record.errno = Outcome.FAILED, errno
        if devpath is not None:
            record.devices.add(devpath)

    def attribute_at_start(self, live: Iterable[str], history: History) -> None:
        """Who loaded each module live at start: an earlier instance of this boot (the record
        file says so), else someone before this instance started."""
        for name in live:
            record = self.module(name, Outcome.ALREADY_LOADED)
            earlier = history.loaded.get(name)
            if earlier is not None:
                record.loaded_by, record.loaded_by_pid = LoadedBy.PREVIOUS_INSTANCE, earlier.pid
                record.devices.update(earlier.devpaths)
            else:
                record.loaded_by, record.loaded_by_pid = LoadedBy.BEFORE_START, None

    def attribute_boot(self, loads: Mapping[str, BootLoad]) -> int:
        """What the boot's trace says of the modules live before any kmodd (BEFORE_START):
        the kernel's request one answered, the initramfs, or the task that loaded it.
        Returns how many modules it told more of."""
        told = 0
        for name, load in loads.items():
            record = self.modules.get(name)
            if record is None or record.loaded_by is not LoadedBy.BEFORE_START:
                continue
            told += 1
            if load.request is not None:
                record.loaded_by, record.request = LoadedBy.KERNEL_REQUEST, load.request
                record.cause = "in the initramfs" if load.initramfs else "before kmodd started"
            elif load.initramfs:
                record.loaded_by, record.cause = LoadedBy.INITRAMFS, load.task.words
            else:
                record.cause = load.task.words
        return told

    def expect_from_previous(self, inserting: dict[str, int]) -> None:
        """Modules an earlier instance was inserting when it ended (module -> its pid)."""
        self._expected = dict(inserting)

    def went_live_elsewhere(self, name: str) -> bool:
        """A module went live, not by this instance's insert: True when that is news (it was
        not known live from the start, nor an insert an earlier instance left running)."""
        record = self.modules.get(name)
        if record is not None and record.loaded_by is not None:
            return False
        record = self.module(name, Outcome.ALREADY_LOADED)
        pid = self._expected.pop(name, None)
        if pid is not None:
            record.loaded_by, record.loaded_by_pid = LoadedBy.PREVIOUS_INSTANCE, pid
            return False
        record.loaded_by, record.loaded_by_pid = LoadedBy.NOT_KMODD, None
        return True

    def note_kernel_request(self, name: str, request: ModuleRequest) -> None:
        """A module went live at the kernel's request (its helper loaded it)."""
        record = self.module(name, Outcome.ALREADY_LOADED)
        if record.loaded_by in (LoadedBy.KMODD, LoadedBy.PREVIOUS_INSTANCE):
            return
        record.loaded_by, record.loaded_by_pid = LoadedBy.KERNEL_REQUEST, None
        record.request = request

    def went_away(self, name: str) -> None:
        """The module was removed: whoever loads it next makes it live anew."""
        record = self.modules.get(name)
        if record is not None:
            record.loaded_by = record.loaded_by_pid = None
            record.request = record.cause = None
