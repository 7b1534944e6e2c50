"""Loading the static lists at start: modules-load.d, `modules_load=` and Debian's /etc/modules
(`core.autoload.modulesload` for the rules, `system.modulesload` for the reading), in the place
of systemd-modules-load.service when the admin sets `modules_load = yes`.

Each listed module goes the way a device's modules go: decided with udev's and
systemd-modules-load's flags (`AUTOLOAD_FLAGS`, libkmod's full blacklist: a module deny-listed
in modprobe.d is skipped, and one on the kernel's `module_blacklist=` is refused by the kernel),
run by the same loader, told by the same teller and noted in the same records, with the
file and line that name it (`Where.listed`, KMODD_LISTED_IN) instead of a device. The levels are
`Request.LISTED`'s: a module that cannot be loaded is a warning, a deny-listed one a notice
that names the line denying it.

Taking over is announced with a flag file (`TAKEOVER_FLAG`) created before READY=1:
systemd-modules-load.service, ordered after kmodd.service by the drop-in the package ships,
finds it and stands aside (`ConditionPathExists=!`). Without the setting (or in a dry run,
which loads nothing) the flag is removed and systemd-modules-load runs as before.

The lists are loaded once per boot, as systemd-modules-load loads them: once they are, the
flag says so (`system.takeover`; /run is empty at boot), and a later instance of the same boot (a
restart, an upgrade) only notes which live modules the lists name, so that a module the admin
removed since is not loaded again behind their back.
"""

from __future__ import annotations

import asyncio

from kmodd.core.autoload.decide import AUTOLOAD_FLAGS, Candidate, decide
from kmodd.core.autoload.messages import Message
from kmodd.core.autoload.modulesload import ModuleToLoad, normalize
from kmodd.core.autoload.outcome import Outcome, Request
from kmodd.core.kmod.plan import LiveState
from kmodd.daemon.loader import Loader
from kmodd.daemon.records import ChainRecord, Records
from kmodd.daemon.report import Facts, Reporter, Where
from kmodd.daemon.snapshot import Snapshots
from kmodd.daemon.telling import Teller
from kmodd.system.journal import Priority
from kmodd.system.modulesload import Lists
from kmodd.system.root import Root


class StaticLists:
    """Loads what the lists name, through the decide/loader/teller path of devices."""

    def __init__(self, snapshots: Snapshots, loader: Loader, live: LiveState,
                 reporter: Reporter, records: Records, teller: Teller, root: Root, *,
                 dry_run: bool) -> None:
        self.snapshots = snapshots
        self.loader = loader
        self.live = live
        self.reporter = reporter
        self.records = records
        self.teller = teller
        self.root = root
        self.dry_run = dry_run

    def remember(self, lists: Lists) -> None:
        """An earlier instance loaded the lists: note the places of the live modules they
        name (for `kmodctl why`), load nothing."""
        for item in lists.modules:
            record = self.records.modules.get(normalize(item.module))
            if record is not None:
                self.records.note_listed(record.name, record.outcome,
                                         [p.where for p in item.places])

    async def run(self, lists: Lists) -> None:
        """Say what could not be read, then load every listed module (at once, as the
        loader's parallel limit allows; a module's dependencies are in its own chain)."""
        for problem in lists.problems:
            self.reporter.log(Priority.WARNING, Message.CONFIG_IGNORED, problem)
        await asyncio.gather(*(self._one(item) for item in lists.modules))

    async def _one(self, item: ModuleToLoad) -> None:
        try:
            await self._load(item)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug costs one listed module, not the daemon
            self.reporter.log(Priority.ERR, Message.INTERNAL_ERROR,
                              f"Internal error while loading {item.module} (listed in "
                              f"{item.first.where}): {type(e).__name__}: {e}")

    async def _load(self, item: ModuleToLoad) -> None:
        snapshot = self.snapshots.current
        where = Where(listed=item.first.where)
        places = [p.where for p in item.places]
        resolution = decide(snapshot.resolver(), self.live, item.module, AUTOLOAD_FLAGS,
                            item.first.options or None)
        key = item.module
        if not resolution.found:
            outcome = Outcome.FAILED if resolution.error else Outcome.NOT_FOUND
            self.reporter.outcome(
                Facts(outcome, key=key, where=where, errno=resolution.error or None,
                      detail="the name is not a valid alias" if resolution.error else ""),
                Request.LISTED)
            self.records.note_listed(normalize(key), outcome, places)
            return
        chains: list[Candidate] = []
        for candidate in resolution.candidates:
            self.records.note_listed(candidate.name, candidate.outcome or Outcome.PLANNED,
                                     places)
            decided = candidate.outcome
            if decided is None:
                if candidate.plan is not None:  # always, for a module to load
                    chains.append(candidate)
                continue
            detail = ""
            if decided is Outcome.BLACKLISTED:
                detail = ("skipped: blacklisted by "
                          + snapshot.config.blacklist_source(candidate.name))
            self.reporter.outcome(Facts(decided, module=candidate.name, key=key, where=where,
                                        detail=detail), Request.LISTED)
            self.records.note_module(candidate.name, decided, None)
        results = await asyncio.gather(*(
            self.loader.run_chain(
                c.plan, AUTOLOAD_FLAGS, kernel_blacklist=snapshot.kernel_blacklist,
                dry_run=self.dry_run,
                on_step=lambda step: self.teller.tell_step(step, where, Request.LISTED))
            for c in chains if c.plan is not None))  # (all of them: the check is for mypy)
        for candidate, (result, joined) in zip(chains, results, strict=True):
            self.teller.tell_chain(ChainRecord(candidate, result, joined), where,
                                   Request.LISTED, steps_told=True)
