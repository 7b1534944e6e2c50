"""The QEMU guest's kernel checks, run here against the simulated kernel with Debian's modules.

This keeps `guest_checks.py` honest before it reaches a real kernel: every kmodd-side
expectation it states must hold on the simulation of Linux 6.1 too.
"""

import os

import pytest

from kmodd.system.root import Root
from tests.fakes import FakeKernel, kallsyms_from_modules
from tests.kerneltree import debian_kernel_tree

pytestmark = [pytest.mark.oracle]


def test_every_guest_check_passes_on_the_simulated_kernel(tmp_path):
    from kmodd.core.modfile import elf
    from tests.kernel.guest_checks import Session, run_checks

    tree = debian_kernel_tree()
    session_root = Root(str(tmp_path))
    os.makedirs(session_root.prefix, exist_ok=True)
    images = []
    for rel in ("fs/fat/fat.ko", "fs/fat/vfat.ko", "fs/fat/msdos.ko", "drivers/block/loop.ko"):
        with open(f"{tree.moddir}/kernel/{rel}", "rb") as f:
            images.append(elf.parse_module(f.read()))
    kernel = FakeKernel(session_root, kallsyms=kallsyms_from_modules(images))
    checks = run_checks(Session(session_root, tree.moddir, kernel=kernel.port(),
                                compare_real=False))
    failed = [(c.name, c.detail) for c in checks if not c.ok]
    assert failed == []
    assert len(checks) == 20
