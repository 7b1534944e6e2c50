"""Random module trees: kmodd's depmod and kmod 30's agree on every file and message.

hypothesis draws small trees: modules that export and need symbols (strong or weak, some
unknown), so that dependency chains, shared dependencies and cycles all occur; some modules
are missing from modules.order (kmod then falls back on its hash order), some have twins
in `updates/`, some carry aliases. Trees on which kmod 30 itself fails (its cycle report
walk circling for ever, or overrunning its stack and aborting on an assertion) are
discarded: kmodd reports those cycles and ends.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.scenarios_depmod.harness import KVER, Tree, simple

pytestmark = pytest.mark.oracle

NAMES = [f"m{i}" for i in range(8)]


@st.composite
def trees(draw: st.DrawFn) -> dict[str, object]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=7, unique=True))
    modules = {}
    for name in names:
        needs = draw(st.lists(st.sampled_from([f"s_{n}" for n in NAMES] + ["unknown"]),
                              max_size=3, unique=True))
        weak = draw(st.lists(st.sampled_from([f"s_{n}" for n in NAMES]), max_size=1))
        aliases = draw(st.lists(st.sampled_from(["a-x", "pci:v*d*", "usb:v1[0-9]*",
                                                 "devname:foo", "char-major-1-2"]),
                                max_size=2))
        modules[name] = {"needs": needs, "weak": weak, "aliases": aliases,
                         "twin": draw(st.booleans()) and draw(st.booleans())}
    listed = draw(st.permutations(names))
    listed = listed[: draw(st.integers(min_value=0, max_value=len(listed)))]
    return {"modules": modules, "listed": listed}


def _build(tree: Tree, spec: dict[str, object]) -> None:
    modules = spec["modules"]
    assert isinstance(modules, dict)
    for name, m in modules.items():
        ko = simple(name, exports=(f"s_{name}",), needs=tuple(m["needs"]),
                    weak=tuple(m["weak"]),
                    modinfo=("license=GPL", *(f"alias={a}" for a in m["aliases"])))
        tree.module(f"kernel/{name}.ko", ko)
        if m["twin"]:
            tree.module(f"updates/{name}.ko", ko)
    listed = spec["listed"]
    assert isinstance(listed, list)
    tree.order(*(f"kernel/{n}.ko" for n in listed))


#: Examples per run; KMODD_DEPMOD_EXAMPLES=400 for a longer search.
EXAMPLES = int(os.environ.get("KMODD_DEPMOD_EXAMPLES", "30"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_random_trees_give_kmods_files_and_messages(spec: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Tree(f"{tmp}/root")
        os.makedirs(tree.moddir)
        _build(tree, spec)
        try:
            kmod = tree.kmod("-b", tree.root, KVER)
        except subprocess.TimeoutExpired:
            kmod = None  # kmod 30 loops for ever on this tree
        assume(kmod is not None and kmod.rc >= 0)  # < 0: killed by its own assert()
        assert kmod is not None  # (assume stopped the example otherwise)
        kmodd = tree.kmodd("-b", tree.root, KVER)
        assert kmodd.stderr.decode() == kmod.stderr.decode()
        assert kmodd.rc == kmod.rc
        assert kmodd.files == kmod.files
