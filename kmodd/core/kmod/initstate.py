"""A module's state in the kernel, as libkmod names it (`enum kmod_module_initstate`)."""

from __future__ import annotations

from enum import StrEnum


class InitState(StrEnum):
    """BUILTIN comes from the index; the others from /sys/module/<name>/initstate."""

    BUILTIN = "builtin"
    LIVE = "live"
    COMING = "coming"
    GOING = "going"


#: "In the kernel" as libkmod's module_is_inkernel() means it.
IN_KERNEL = frozenset({InitState.LIVE, InitState.BUILTIN})
