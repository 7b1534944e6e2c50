"""depmod's dependency order and its cycle report (`depmod_calculate_dependencies`,
`depmod_report_cycles`), step for step as kmod 30 takes them, because both the numbering and
the wording and order of the cycle lines are visible in its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kmodd.core.depmod.config import Message
from kmodd.core.priority import Priority


class Named(Protocol):
    """What the cycle report needs of a module."""

    @property
    def modname(self) -> str: ...


def topological_sort(deps: list[list[int]],
                      users: list[int]) -> tuple[list[int], list[int] | None]:
    """kmod's sort: numbers from the modules nobody uses, last freed first. Returns the
    numbers, and the remaining user counts when some modules could not be numbered."""
    n = len(deps)
    left = list(users)
    roots = [i for i in range(n) if left[i] == 0]
    dep_sort_idx = [0x7FFFFFFF] * n
    count = 0
    while roots:
        src = roots.pop()
        dep_sort_idx[src] = count
        count += 1
        for dst in deps[src]:
            left[dst] -= 1
            if left[dst] == 0:
                roots.append(dst)
    return dep_sort_idx, (left if count < n else None)


@dataclass(frozen=True, slots=True)
class _Vertex:
    module: int
    parent: _Vertex | None


def _ring_remove(ring: list[int], module: int) -> None:
    """kmod's `kmod_list_remove_data` on its circular list: the element after the removed
    one becomes the head (`ring[0]`), so later walks start from there."""
    try:
        at = ring.index(module)
    except ValueError:
        return
    del ring[at]
    if ring and at:
        ring[:] = ring[at % len(ring) :] + ring[: at % len(ring)]


def _loop_back_to(vertex: _Vertex) -> list[int]:
    """The modules from an earlier visit of vertex's module on its own path down to
    vertex's parent ([] when the module is not on its path)."""
    chain = []
    v = vertex.parent
    while v is not None:
        chain.append(v.module)
        if v.module == vertex.module:
            chain.reverse()
            return chain
        v = v.parent
    return []


def report_cycles(modules: Sequence[Named], deps: list[list[int]],
                   users: list[int]) -> list[Message]:
    """`depmod_report_cycles`: walk from each module still in use, report each return to
    the starting module, then count the modules seen in cycles. The walks start in the
    order of kmod's circular list of such modules, whose head moves on every removal."""
    roots = [i for i in range(len(modules)) if users[i] > 0]
    visited = [False] * len(modules)
    in_loops: set[str] = set()
    hang_reports: set[str] = set()
    messages: list[Message] = []
    while roots:
        root = roots.pop(0)
        stack = [_Vertex(root, None)]
        while stack:
            vertex = stack.pop()
            m = vertex.module
            if visited[m] and m == root:
                chain = []
                v = vertex.parent
                while v is not None:
                    chain.append(v.module)
                    in_loops.add(modules[v.module].modname)
                    v = v.parent
                chain.reverse()
                for c in chain:
                    _ring_remove(roots, c)
                text = " -> ".join([*(modules[c].modname for c in chain), modules[m].modname])
                messages.append(Message(Priority.ERR, f"Cycle detected: {text}\n"))
                continue
            visited[m] = True
            if not deps[m]:
                _ring_remove(roots, m)
                continue
            loop = _loop_back_to(vertex)
            if loop:
                # A cycle the start is not on: kmod 30 walks it forever (depmod hangs).
                # Report it here instead, in the same words, and walk on.
                for c in loop:
                    in_loops.add(modules[c].modname)
                    _ring_remove(roots, c)
                text = " -> ".join([*(modules[c].modname for c in loop), modules[m].modname])
                if text not in hang_reports:
                    hang_reports.add(text)
                    messages.append(Message(Priority.ERR, f"Cycle detected: {text}\n"))
                continue
            stack.extend(_Vertex(d, vertex) for d in deps[m])
    messages.append(Message(Priority.ERR,
                            f"Found {len(in_loops)} modules in dependency cycles!\n"))
    return messages
