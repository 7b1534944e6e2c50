"""Compare two sides' results case by case and describe the differences briefly.

`differences(cases, expected, actual)` lists the mismatching cases; `report(...)` turns them
into a short text: the count, then for the first few a unified diff of stdout and stderr (a
few lines each, bytes shown with escapes) and the exit codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from .kmodrun import Case, Result

SHOW_CASES = 5
SHOW_LINES = 12


def differences(expected: Sequence[Result], actual: Sequence[Result]) -> list[int]:
    """Indexes of the cases whose stdout, stderr or exit code differ."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} expected results, {len(actual)} actual")
    return [i for i, (e, a) in enumerate(zip(expected, actual, strict=True)) if e != a]


def _lines(data: bytes) -> list[str]:
    return [repr(line)[2:-1] for line in data.splitlines(keepends=True)]


def _diff(name: str, want: bytes, got: bytes) -> list[str]:
    if want == got:
        return []
    diff = list(difflib.unified_diff(_lines(want), _lines(got), f"kmod {name}",
                                     f"kmodd {name}", n=1, lineterm=""))
    if len(diff) > SHOW_LINES:
        diff = [*diff[:SHOW_LINES], f"... ({len(diff) - SHOW_LINES} more diff lines)"]
    return ["    " + line for line in diff]


def describe(case: Case, want: Result, got: Result) -> str:
    out = [f"  $ {case.label()}"]
    if want.rc != got.rc:
        out.append(f"    exit code: kmod {want.rc}, kmodd {got.rc}")
    out += _diff("stdout", want.stdout, got.stdout)
    out += _diff("stderr", want.stderr, got.stderr)
    return "\n".join(out)


def report(title: str, cases: Sequence[Case], expected: Sequence[Result],
           actual: Sequence[Result]) -> str | None:
    """None when all cases agree, else a short description of how many differ and how."""
    bad = differences(expected, actual)
    if not bad:
        return None
    head = f"{title}: {len(bad)} of {len(cases)} cases differ from kmod"
    shown = [describe(cases[i], expected[i], actual[i]) for i in bad[:SHOW_CASES]]
    more = [f"  ... and {len(bad) - SHOW_CASES} more"] if len(bad) > SHOW_CASES else []
    return "\n".join([head, *shown, *more])
