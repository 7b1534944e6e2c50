"""Telling outcomes: one journal record (and Monitor event) per decision, per step acted on
and per chain that failed before its module, each noted in the daemon's records as it is told.
Steps are told as they end (the loader calls back from its threads through the event loop),
so a daemon killed in the middle of a chain has told every step that ended."""

from __future__ import annotations

from kmodd.core.autoload.decide import KERNEL_BLACKLIST_PARAMETER, Resolution
from kmodd.core.autoload.outcome import Outcome, Request
from kmodd.core.kmod.plan import StepAction
from kmodd.daemon.loader import StepResult
from kmodd.daemon.records import ChainRecord, DeviceRecord, Records
from kmodd.daemon.report import Facts, Reporter, Where


class Teller:
    """Tells the reporter, notes the records."""

    def __init__(self, reporter: Reporter, records: Records) -> None:
        self.reporter = reporter
        self.records = records

    def tell_decisions(self, record: DeviceRecord, resolution: Resolution) -> None:
        """What was decided for one looked-up key of a device (not found, skipped...)."""
        where = record.where
        key = resolution.key
        if not resolution.found:
            if resolution.error:
                self.reporter.outcome(Facts(Outcome.FAILED, key=key, where=where,
                                            errno=resolution.error,
                                            detail="the name is not a valid alias"),
                                      Request.AUTOLOAD)
            else:
                self.reporter.outcome(Facts(Outcome.NOT_FOUND, key=key, where=where),
                                      Request.AUTOLOAD)
            return
        for candidate in resolution.candidates:
            outcome = candidate.outcome
            if outcome is None:
                continue
            self.reporter.outcome(Facts(outcome, module=candidate.name, key=key, where=where),
                                  Request.AUTOLOAD)
            self.records.note_module(candidate.name, outcome, record.devpath)

    def tell_step(self, step: StepResult, where: Where, request: Request) -> None:
        """One record for a step acted on (or planned), as soon as it ended."""
        duration = None
        if step.started is not None and step.finished is not None:
            duration = int((step.finished - step.started) * 1_000_000)
        detail = step.detail if step.action is not StepAction.SKIP else ""
        if step.outcome is Outcome.BLACKLISTED and not detail:
            detail = f"refused by the kernel: {KERNEL_BLACKLIST_PARAMETER} on its command line"
        self.reporter.outcome(
            Facts(step.outcome, module=step.module, key=step.module, where=where,
                  errno=step.errno or None, duration_usec=duration,
                  diagnosis=step.diagnosis, kernel_lines=step.kernel_lines, detail=detail,
                  kernel_denied=(step.outcome is Outcome.BLACKLISTED)),
            request, quiet=step.joined)
        self.records.note_step(step, where.devpath)

    def tell_chain(self, chain: ChainRecord, where: Where, request: Request, *,
                   steps_told: bool = False) -> None:
        """One record per step acted on (unless `steps_told`: `tell_step` told each as it
        ended), and one for the requested module when a step before it failed; a
        waited-for chain is told quietly."""
        result = chain.result
        name = result.module
        devpath = where.devpath
        if chain.joined:
            outcome = chain.outcome
            self.reporter.outcome(
                Facts(outcome, module=name, key=name, where=where, errno=result.errno or None,
                      detail="waited for the load another request started"),
                request, quiet=True)
            if devpath is not None:
                self.records.note_module(name, outcome, devpath)
            return
        requested_seen = False
        for step in result.steps:
            requested_seen |= step.requested
            if not steps_told:
                self.tell_step(step, where, request)
        if not requested_seen and result.errno:
            failed = result.failed_step
            because = f"its dependency {failed.module} failed" if failed else "a step failed"
            # As serious as the dependency's failure (a driver that found no device is mild).
            self.reporter.outcome(Facts(Outcome.FAILED, module=name, key=name, where=where,
                                        errno=result.errno, detail=because,
                                        diagnosis=failed.diagnosis if failed else None),
                                  request)
            self.records.note_failed_chain(name, result.errno, devpath)
