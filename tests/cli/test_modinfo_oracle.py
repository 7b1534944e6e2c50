"""modinfo compared with the real modinfo on the whole Debian 6.1 kernel (4023 modules)."""

import glob
import importlib.util
import os

import pytest

from kmodd.system.root import Root
from tests.kerneltree import debian_kernel_tree
from tests.toolrun import kmodd_tool, real_tool

pytestmark = [pytest.mark.oracle]

HAS_RESOLVER = importlib.util.find_spec("kmodd.core.kmod.resolve") is not None
needs_resolver = pytest.mark.skipif(
    not HAS_RESOLVER,
    reason="name, alias and builtin lookups need kmodd.core.kmod.resolve (lead's resolver), "
           "not merged yet")


@pytest.fixture(scope="module")
def tree():
    return debian_kernel_tree()


@pytest.fixture(scope="module")
def paths(tree):
    found = sorted(glob.glob(f"{tree.moddir}/kernel/**/*.ko", recursive=True))
    assert len(found) == 4023
    return found


def test_every_debian_module_prints_exactly_as_the_real_modinfo(paths):
    ours, real = kmodd_tool(["modinfo", *paths]), real_tool(["modinfo", *paths])
    assert (ours.rc, ours.err) == (real.rc, real.err)
    assert ours.out == real.out


@pytest.mark.parametrize("options", [["-F", "parm"], ["-F", "signer"], ["-F", "alias"], ["-0"]])
def test_fields_of_every_debian_module_match(paths, options):
    ours, real = kmodd_tool(["modinfo", *options, *paths]), real_tool(["modinfo", *options,
                                                                         *paths])
    assert ours == real


@needs_resolver
@pytest.mark.parametrize("args", [
    ["e1000", "snd-hda-intel", "fat"],
    ["pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"],  # a device's modalias
    ["usb:v0403p6001d0600dc00dsc00dp00icFFiscFFipFFin00"],
    ["symbol:fat_fill_super"],
    ["fs-debugfs", "zpool-zbud"],  # aliases of built-in modules
    ["no-such-module", "bad[alias"],
    ["-F", "filename", "e1000", "unix"],
    ["-0", "e1000"],
])
def test_module_names_and_aliases_match(tree, args):
    argv = ["modinfo", "-b", tree.root, "-k", tree.kver, *args]
    assert kmodd_tool(argv, root=Root()) == real_tool(argv)


@needs_resolver
def test_builtin_modules_match(tree):
    with open(os.path.join(tree.moddir, "modules.builtin")) as f:
        names = [os.path.basename(line.strip()).removesuffix(".ko") for line in f][:50]
    argv = ["modinfo", "-b", tree.root, "-k", tree.kver, *names]
    assert kmodd_tool(argv) == real_tool(argv)


@needs_resolver
def test_lookup_by_name_with_m_and_missing_names_match(tree):
    argv = ["modinfo", "-b", tree.root, "-k", tree.kver, "-m", "e1000", "no_such_module"]
    assert kmodd_tool(argv) == real_tool(argv)
