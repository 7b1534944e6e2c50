"""Module state read from /proc and /sys exactly as libkmod reads it."""

import os

import pytest

from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.system.modstate import (
    ProcModule,
    ProcModulesError,
    SysModules,
    parse_proc_modules,
)
from kmodd.system.root import Root


@pytest.fixture
def root(tmp_path):
    os.makedirs(tmp_path / "sys" / "module")
    os.makedirs(tmp_path / "proc")
    return Root(str(tmp_path))


@pytest.fixture
def events():
    return []


@pytest.fixture
def modules(root, events):
    return SysModules(root, events.append)


def put(root, rel, text):
    path = root.path("/" + rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("text,state", [("live\n", InitState.LIVE), ("coming\n", InitState.COMING),
                                        ("going\n", InitState.GOING)])
def test_initstate_text_gives_the_state(root, modules, text, state):
    put(root, "sys/module/fat/initstate", text)
    assert modules.initstate("fat") is state


def test_a_module_directory_without_initstate_is_coming(root, modules):
    os.makedirs(root.sys_module("fat"))
    assert modules.initstate("fat") is InitState.COMING


def test_no_module_directory_means_not_loaded(modules):
    assert modules.initstate("fat") is None


def test_initstate_without_its_newline_is_unknown_and_logged_like_libkmod(root, modules, events):
    put(root, "sys/module/fat/initstate", "live")
    assert modules.initstate("fat") is None
    assert events == [LibkmodEvent("initstate_unknown",
                                   "unknown /sys/module/fat/initstate: 'live'\n")]


def test_refcnt_needs_a_number_followed_by_whitespace(root, modules, events):
    put(root, "sys/module/fat/refcnt", "3\n")
    assert modules.refcnt("fat") == 3
    put(root, "sys/module/fat/refcnt", "3")
    assert modules.refcnt("fat") == -22
    assert events[-1].site == "refcnt_read"
    assert events[-1].text == ("could not read integer from '/sys/module/fat/refcnt': "
                               "'Invalid argument'\n")


def test_missing_refcnt_is_minus_enoent_without_a_message(root, modules, events):
    os.makedirs(root.sys_module("fat"))
    assert modules.refcnt("fat") == -2
    assert events == []


def test_size_prefers_coresize(root, modules):
    put(root, "sys/module/fat/coresize", "86016\n")
    put(root, "proc/modules", "fat 90000 0 - Live 0x0\n")
    assert modules.size("fat") == 86016


def test_size_falls_back_to_proc_modules(root, modules):
    os.makedirs(root.sys_module("fat"))
    put(root, "proc/modules", "vfat 20480 0 - Live 0x0\nfat 90000 1 vfat, Live 0x0\n")
    assert modules.size("fat") == 90000


def test_size_of_a_module_without_sysfs_directory_is_minus_enoent(modules):
    assert modules.size("fat") == -2


def test_a_proc_modules_line_with_only_name_and_size_is_invalid_because_of_the_newline(
        root, modules, events):
    os.makedirs(root.sys_module("fat"))
    put(root, "proc/modules", "fat 90000\n")
    assert modules.size("fat") == -2
    assert events == [LibkmodEvent("size_bad_line_size",
                                   "invalid line format at /proc/modules:1\n")]


def test_holders_come_in_directory_order_normalised(root, modules):
    os.makedirs(root.sys_module("fat", "holders"))
    for holder in ("vfat", "msdos-x"):
        os.symlink(f"../../{holder}", root.sys_module("fat", "holders", holder))
    assert sorted(modules.holders("fat")) == ["msdos_x", "vfat"]
    in_readdir_order = os.listdir(root.sys_module("fat", "holders"))
    assert modules.holders("fat") == [n.replace("-", "_") for n in in_readdir_order]


def test_unreadable_holders_is_none_and_logged(modules, events):
    assert modules.holders("fat") is None
    assert events == [LibkmodEvent(
        "holders_open", "could not open '/sys/module/fat/holders': No such file or directory\n")]


def test_loaded_names_follow_proc_modules_and_normalise(root, modules):
    put(root, "proc/modules", "snd_hda_intel 57344 2 - Live 0x0\nsnd-pcm 1 0 - Live 0x0\n")
    assert modules.loaded_names() == ["snd_hda_intel", "snd_pcm"]


def test_loaded_names_without_proc_modules_is_the_errno_and_libkmods_message(modules, events):
    assert modules.loaded_names() == 2
    assert events == [LibkmodEvent("proc_modules_open",
                                   "could not open /proc/modules: No such file or directory\n")]


def test_proc_modules_lines_parse_into_fields():
    parsed = parse_proc_modules(
        "vfat 20480 1 - Live 0xffffffffc0a00000\n"
        "fat 86016 2 vfat,msdos,[permanent], Loading 0x0000000000000000 (OE+)\n"
        "broken line\n")
    assert parsed == [
        ProcModule("vfat", 20480, 1, (), False, "Live", "0xffffffffc0a00000", ""),
        ProcModule("fat", 86016, 2, ("vfat", "msdos"), True, "Loading", "0x0000000000000000",
                   "(OE+)"),
        ProcModulesError(3, "broken line", "fewer than 6 fields"),
    ]


def test_parameters_taint_tainted_and_compression(root, modules):
    put(root, "sys/module/fat/parameters/debug", "N\n")
    put(root, "sys/module/fat/taint", "OE\n")
    put(root, "proc/sys/kernel/tainted", "12288\n")
    put(root, "sys/module/compression", "zstd\n")
    assert modules.parameters("fat") == {"debug": "N"}
    assert modules.taint("fat").letters == "OE"
    assert modules.tainted().letters == "OE"
    assert modules.kernel_compression() == "zstd"


def test_no_compression_file_means_the_kernel_does_not_decompress(modules):
    assert modules.kernel_compression() is None
