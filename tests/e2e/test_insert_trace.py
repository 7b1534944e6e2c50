"""The guest agent's reading of the insert trace: a duplicate is not a race with modprobe.

Pure parsing of trace lines (no VM): runs on the host with the agent's module.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "vm", "guest"))

from agent import classify_inserts


def _enter(comm: str, pid: int, t: str) -> str:
    return f"{comm:>16}-{pid:<6} [000] ...1.  {t}: sys_finit_module(fd: 3, uargs: 0, flags: 0)\n"


def _exit(comm: str, pid: int, t: str, ret: str) -> str:
    return f"{comm:>16}-{pid:<6} [000] ...1.  {t}: sys_finit_module -> {ret}\n"


EEXIST_RET = "0xffffffffffffffef"  # -17 as the trace prints it


def test_eexist_while_the_kernels_modprobe_inserts_is_a_race_not_a_duplicate() -> None:
    lines = [_enter("kmodd", 120, "5.000000"), _enter("modprobe", 300, "5.001000"),
             _exit("kmodd", 120, "5.050000", "0x0"),
             _exit("modprobe", 300, "5.060000", EEXIST_RET)]
    report = classify_inserts(lines)
    assert (report["attempts"], report["results"], report["duplicates"], report["raced"]) == \
        (2, {"ok": 1, "errno17": 1}, 0, 1)
    assert report["callers"] == {"kmodd": 1, "modprobe": 1}


def test_eexist_with_nobody_else_inserting_is_a_duplicate() -> None:
    lines = [_enter("kmodd", 120, "5.000000"), _exit("kmodd", 120, "5.050000", "0x0"),
             _enter("kmodd", 121, "6.000000"), _exit("kmodd", 121, "6.010000", EEXIST_RET)]
    report = classify_inserts(lines)
    assert (report["duplicates"], report["raced"]) == (1, 0)
    assert report["duplicate_lines"] == [_exit("kmodd", 121, "6.010000", EEXIST_RET).strip()]


def test_two_threads_of_one_loader_racing_is_a_duplicate() -> None:
    lines = [_enter("kmodd", 120, "5.000000"), _enter("kmodd", 121, "5.001000"),
             _exit("kmodd", 120, "5.050000", "0x0"),
             _exit("kmodd", 121, "5.051000", EEXIST_RET)]
    assert classify_inserts(lines)["duplicates"] == 1
