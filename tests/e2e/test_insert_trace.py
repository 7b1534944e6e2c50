"""The guest agent's reading of the insert trace: a duplicate is neither a race with modprobe
nor a module whose own init answered EEXIST.

Pure parsing of trace lines (no VM): runs on the host with the agent's module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _guest_script(name: str) -> ModuleType:
    """tests/e2e/vm/guest/NAME.py, loaded by its path: a script of the guest (`/vm/NAME.py`
    there, importing its siblings by their bare names), not a module of this package."""
    spec = importlib.util.spec_from_file_location(
        f"guest_{name}", Path(__file__).parent / "vm" / "guest" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


classify_inserts = _guest_script("agent").classify_inserts


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


def _loaded(comm: str, pid: int, t: str, module: str) -> str:
    return f"{comm:>16}-{pid:<6} [000] .....  {t}: module_load: {module}\n"


def test_eexist_after_the_module_began_to_initialise_is_its_init_declining() -> None:
    """pcc_cpufreq's init answers EEXIST when another cpufreq driver is in charge."""
    lines = [_enter("kmodd", 182, "51.303320"), _loaded("kmodd", 182, "51.563067", "pcc_cpufreq"),
             _exit("kmodd", 182, "51.600811", EEXIST_RET)]
    report = classify_inserts(lines)
    assert (report["results"], report["duplicates"], report["raced"], report["declined"]) == \
        ({"errno17": 1}, 0, 0, ["pcc_cpufreq"])


def test_a_module_load_of_another_thread_does_not_make_an_eexist_a_decline() -> None:
    lines = [_enter("kmodd", 120, "5.000000"), _enter("kmodd", 121, "5.001000"),
             _loaded("kmodd", 120, "5.020000", "sd_mod"), _exit("kmodd", 120, "5.050000", "0x0"),
             _exit("kmodd", 121, "5.051000", EEXIST_RET)]
    report = classify_inserts(lines)
    assert (report["duplicates"], report["declined"]) == (1, [])


def test_a_decline_is_forgotten_when_the_thread_inserts_again() -> None:
    lines = [_enter("kmodd", 120, "5.000000"), _loaded("kmodd", 120, "5.020000", "button"),
             _exit("kmodd", 120, "5.050000", "0xffffffffffffffed"),  # ENODEV
             _enter("kmodd", 120, "6.000000"), _exit("kmodd", 120, "6.010000", EEXIST_RET)]
    report = classify_inserts(lines)
    assert (report["duplicates"], report["declined"]) == (1, [])
