"""`kmodctl explain` on Debian's real kernel tree: no false alarms, and vmlinux's CRCs right.

The kernel's own modules all load on their kernel, so explaining them must find no problem.
Where no Module.symvers is installed (a stock system), the CRCs of vmlinux's exports come
from the `__versions` of the kernel's own modules; checked here against the build's real
Module.symvers (linux-headers).
"""

from __future__ import annotations

import os

import pytest

from kmodd.core.explain.model import Verdict
from kmodd.core.kmod.kernelview import parse_module_symvers
from kmodd.system.diagnose import _versions, explain, read_module
from kmodd.system.root import Root
from tests.fakes import FakeKernel, kallsyms_from_symvers

pytestmark = pytest.mark.oracle

#: Every this-many-th module of modules.dep is explained (a spread over the whole tree).
SAMPLE_EVERY = 40


def symvers_path(kver: str) -> str:
    path = f"/usr/src/linux-headers-{kver}/Module.symvers"
    if not os.path.exists(path):
        pytest.fail(f"linux-headers-{kver} is not installed (scripts/setup-test-env installs "
                    "it)")
    return path


@pytest.fixture(scope="module")
def debian_root(debian_tree, tmp_path_factory):
    """A root whose module directory is Debian's tree and whose kernel is its 6.1."""
    root = tmp_path_factory.mktemp("debian-root")
    os.makedirs(root / "lib/modules")
    os.symlink(debian_tree.moddir, root / "lib/modules" / debian_tree.kver)
    kernel = FakeKernel(Root(str(root)), release=debian_tree.kver, module_sig=False,
                        kallsyms=kallsyms_from_symvers(symvers_path(debian_tree.kver)))
    return kernel, debian_tree


def test_the_kernels_own_modules_explain_without_a_problem(debian_root):
    kernel, tree = debian_root
    with open(f"{tree.moddir}/modules.dep") as f:
        names = [line.split(":")[0].rsplit("/", 1)[-1].split(".")[0] for line in f]
    problems = {}
    for name in names[::SAMPLE_EVERY]:
        expl = explain(name, root=kernel.root, moddir=f"/lib/modules/{tree.kver}",
                       kernel=kernel.port(), read_log=False)
        bad = [f"{f.check}: {f.summary}" for f in expl.findings if f.verdict is Verdict.PROBLEM]
        if bad:
            problems[name] = bad
    assert problems == {}


def test_vmlinux_crcs_from_the_kernels_modules_agree_with_module_symvers(debian_tree):
    with open(symvers_path(debian_tree.kver)) as f:
        truth = parse_module_symvers(f.read())
    seen: dict[str, int] = {}
    with open(f"{debian_tree.moddir}/modules.dep") as f:
        rels = [line.split(":")[0] for line in f]
    for rel in rels:
        image = read_module(f"{debian_tree.moddir}/{rel}", rel)
        assert image.elf is not None
        for name, crc in _versions(image.elf).items():
            if name in truth:
                seen.setdefault(name, crc)
    wrong = {n: (hex(c), hex(truth[n])) for n, c in seen.items() if truth[n] != c}
    assert wrong == {}
    # about two thirds of vmlinux's exports are used (and so recorded) by some module
    print(f"vmlinux CRCs known from modules: {len(seen)} of {len(truth)}")
    assert len(seen) > len(truth) // 2
