"""The CPU priority of the calling thread (Linux keeps a nice value per thread)."""

from __future__ import annotations

import os
import threading

#: The lowest priority a nice value can give.
NICE_MAX = 19


def lower_thread_priority(by: int) -> None:
    """Raise the calling thread's nice value by `by`, at most to NICE_MAX (raising it needs
    no privilege). A system that refuses (a seccomp filter) leaves the thread as it was."""
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(now + by, NICE_MAX))
    except OSError:
        pass
