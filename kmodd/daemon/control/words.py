"""Plans, steps and chains in the control interface's words (PlanStepView, phrases).

Shared by the views `control.state` builds for ListDevices, Why, Explain and Load.
"""

from __future__ import annotations

from collections.abc import Sequence

from kmodd.core.autoload.outcome import Outcome
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.core.kmod.plan import LiveState, Plan, StepAction, step_in_kernel
from kmodd.core.kmod.resolve import Resolver
from kmodd.daemon.control.views import PlanStepView
from kmodd.daemon.loader import ChainResult, StepResult
from kmodd.daemon.records import ChainRecord
from kmodd.daemon.report import Facts


def plan_views(plan: Plan, resolver: Resolver, live: LiveState) -> tuple[PlanStepView, ...]:
    """A plan in the interface's words; steps already in the kernel are skips."""
    if plan.skip is not None:
        return (PlanStepView(StepAction.SKIP.value, plan.name, plan.skip.value),)
    return tuple(
        PlanStepView(StepAction.SKIP.value, step.name, "already in the kernel", step.options)
        if step_in_kernel(live, step) else
        PlanStepView(step.action.value, step.name, step.command, step.options)
        for step in plan.steps)


def step_views(steps: Sequence[StepResult]) -> tuple[PlanStepView, ...]:
    """What was done, step by step (reason: the outcome, when it is not plain success)."""
    views = []
    for step in steps:
        reason: str | None = None
        if step.outcome is Outcome.FAILED:
            reason = f"failed: {strerror(step.errno)}"
        elif step.action is StepAction.SKIP:
            reason = step.detail
        elif step.outcome is not Outcome.INSERTED:
            reason = step.outcome.value
        views.append(PlanStepView(step.action.value, step.module, reason, step.options))
    return tuple(views)


def chain_words(result: ChainResult, joined: bool) -> str:
    """A chain's result in one phrase, for Why and Load."""
    outcome = result.outcome
    if joined:
        return f"{outcome.value} (by a load another request started)"
    deps = [s.module for s in result.steps if not s.requested and s.action is not StepAction.SKIP]
    if outcome is Outcome.FAILED:
        failed = result.failed_step
        if failed is None:
            return "failed"
        text = f"failed: {strerror(failed.errno)}"
        if failed.diagnosis is not None:
            text += f" ({failed.diagnosis.cause.value}: {failed.diagnosis.explanation})"
        if not failed.requested:
            text = f"not loaded: its dependency {failed.module} {text}"
        return text
    text = outcome.value
    if deps:
        text += " after " + ", ".join(deps)
    return text


def chain_facts(chain: ChainRecord) -> Facts:
    """A chain's result as the facts of one outcome (for a LoadResult's message)."""
    result = chain.result
    failed = result.failed_step
    if chain.joined:
        detail = "by a load another request started"
    elif failed is not None and not failed.requested:
        detail = f"its dependency {failed.module} failed"
    else:
        deps = [s.module for s in result.steps
                if not s.requested and s.action is not StepAction.SKIP]
        detail = "after " + ", ".join(deps) if deps else ""
    return Facts(chain.outcome, module=result.module, errno=result.errno or None,
                 diagnosis=failed.diagnosis if failed is not None else None,
                 kernel_lines=failed.kernel_lines if failed is not None else (), detail=detail)
