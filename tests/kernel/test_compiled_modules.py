"""tests/modules (C modules built against Debian's headers): modinfo and the simulated kernel."""

import errno as E
import os

import pytest

from kmodd.system.root import Root
from tests.fakes import FakeKernel, kallsyms_from_symvers
from tests.modules.build import built_modules, headers, module_symvers
from tests.toolrun import kmodd_tool, real_tool

pytestmark = [
    pytest.mark.skipif(headers() is None, reason="no linux-headers-*-amd64 installed"),
]


@pytest.fixture(scope="module")
def built():
    return built_modules()


@pytest.fixture
def kernel(tmp_path):
    root = Root(str(tmp_path / "root"))
    os.makedirs(root.prefix)
    symvers = module_symvers()
    assert symvers is not None  # the module is skipped without headers
    return FakeKernel(root, kallsyms=kallsyms_from_symvers(symvers),
                      init_errors={"kmodd_nodev": E.ENODEV})


@pytest.mark.parametrize("options", [[], ["-p"], ["-F", "depends"], ["-0"]])
def test_modinfo_of_compiled_modules_matches_the_real_modinfo(built, options):
    argv = ["modinfo", *options, *built.values()]
    assert kmodd_tool(argv) == real_tool(argv)


def test_the_simulated_kernel_resolves_them_against_module_symvers(built, kernel):
    port = kernel.port()
    assert port.insert(built["kmodd_user"]).errno == E.ENOENT
    assert kernel.kmsg_texts()[-1] == "kmodd_user: Unknown symbol kmodd_dep_value (err -2)"
    assert port.insert(built["kmodd_dep"], "level=2 tag=x").ok
    assert kernel.module("kmodd_dep").params == {"level": "2", "tag": "x"}
    assert port.insert(built["kmodd_user"]).ok
    assert kernel.module("kmodd_dep").users == ["kmodd_user"]
    assert port.insert(built["kmodd_nodev"]).errno == E.ENODEV


def test_out_of_tree_unsigned_modules_taint_o_and_e(built, kernel):
    kernel.port().insert(built["kmodd_dep"])
    assert kernel.kmsg_texts()[:2] == [
        "kmodd_dep: loading out-of-tree module taints kernel.",
        "kmodd_dep: module verification failed: signature and/or required key missing - "
        "tainting kernel"]
    assert kernel.module("kmodd_dep").taints == 1 << 12 | 1 << 13


def test_guest_checks_with_test_modules_pass_on_the_simulated_kernel(built, kernel):
    from tests.kernel.guest_checks import Session, run_test_module_checks

    session = Session(kernel.root, "/nonexistent", kernel=kernel.port(), compare_real=False)
    checks = run_test_module_checks(session, os.path.dirname(built["kmodd_dep"]))
    assert [(c.name, c.detail) for c in checks if not c.ok] == []
