"""bench/hotplug_trace.py's reading of a guest trace: who had the one vCPU, and when."""

from __future__ import annotations

from bench.hotplug_trace import MARK, analyse


def _line(task: str, pid: int, t: str, event: str) -> str:
    return f"{task:>16}-{pid:<6} [000] d..2.   {t}: {event}"


def _switch(t: str, prev: str, prev_pid: int, state: str, nxt: str, next_pid: int) -> str:
    return _line(prev, prev_pid, t, f"sched_switch: prev_comm={prev} prev_pid={prev_pid} "
                 f"prev_prio=120 prev_state={state} ==> next_comm={nxt} next_pid={next_pid} "
                 "next_prio=120")


#: A made-up hotplug on one CPU: the harness marks, a kworker brings the device up, kmodd
#: decides and inserts a (2 ms outside, 10 ms inside), then b (3 ms inside) after 1 ms, while
#: the harness's streamer runs 2 ms in between; 1 ms idle.
TRACE = "\n".join([
    "# tracer: nop",
    _line("sh", 200, "10.000000", f"tracing_mark_write: {MARK}"),
    _switch("10.001000", "sh", 200, "S", "kworker/u2:3", 41),
    _switch("10.005000", "kworker/u2:3", 41, "I", "kmodd", 100),
    _switch("10.007000", "kmodd", 100, "S", "kmodd", 135),
    _line("kmodd", 135, "10.008000", "sys_finit_module(fd: 11, uargs: a5e588, flags: 0)"),
    _line("kmodd", 135, "10.009000", "module_load: a"),
    _line("kmodd", 135, "10.018000", "sys_finit_module -> 0x0"),
    _line("kmodd", 135, "10.019000", "sys_finit_module(fd: 11, uargs: a5e588, flags: 0)"),
    _line("kmodd", 135, "10.020000", "module_load: b"),
    _switch("10.021000", "kmodd", 135, "R+", "python3", 98),
    _switch("10.023000", "python3", 98, "S", "swapper/0", 0),
    _switch("10.024000", "swapper/0", 0, "R", "kmodd", 135),
    _line("kmodd", 135, "10.025000", "sys_finit_module -> 0x0"),
]) + "\n"


def test_a_hotplug_trace_splits_the_cpu_between_kernel_loader_others_and_idle() -> None:
    t = analyse(TRACE)
    assert t.window == 25.0
    assert (t.first_insert, t.inserts, t.modules) == (8.0, 2, ["a", "b"])
    # Inside finit_module: a 10.008-10.018, b 10.019-10.021 and 10.024-10.025.
    assert t.in_finit == 13.0
    # kmodd outside: the main thread 10.005-10.007, the worker 10.007-10.008, and
    # 10.018-10.019 between its two inserts.
    assert t.loader_outside == 4.0
    # The harness's sh (10.000-10.001), the kworker (4 ms), the streamer (2 ms).
    assert t.others == 7.0
    assert t.idle == 1.0
    assert t.in_finit + t.loader_outside + t.others + t.idle == t.window
    assert t.gaps == [1.0]


def test_a_trace_without_the_mark_or_an_insert_says_nothing() -> None:
    assert analyse("# tracer: nop\n").inserts == 0
    no_insert = TRACE.split("\n")[:5]
    assert analyse("\n".join(no_insert)).window == 0.0
