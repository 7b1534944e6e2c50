"""depmod scenarios from kmod's testsuite (section 4.2), and more, run by kmodd and kmod 30.

Each test builds a module tree with tests/kobuild.py, states what depmod must produce, and
checks that kmod 30's own depmod, run on the same tree with the same arguments, produces
byte for byte the same files, the same messages and the same exit status.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.kobuild import build_ko
from tests.scenarios_depmod.harness import KVER, Result, Tree, simple

pytestmark = pytest.mark.oracle


@pytest.fixture
def tree(tmp_path: os.PathLike[str]) -> Tree:
    t = Tree(f"{tmp_path}/root")
    os.makedirs(t.moddir)
    return t


@pytest.fixture
def conf(tmp_path: os.PathLike[str]):
    """Write depmod.d files into <tmp>/depmod.d; returns the -C arguments."""
    directory = f"{tmp_path}/depmod.d"
    os.makedirs(directory)

    def write(**files: str) -> tuple[str, str]:
        for name, text in files.items():
            with open(f"{directory}/{name}.conf", "w") as f:
                f.write(text)
        return ("-C", directory)
    return write


def _without_libkmod_notes(stderr: bytes) -> str:
    # With -vv libkmod adds notes about its own context, with pointer values in them
    # ("../libkmod/libkmod.c:367 kmod_set_log_fn() ... 0x5596... registered"): not part
    # of what kmodd reproduces.
    return "".join(line for line in stderr.decode().splitlines(keepends=True)
                   if "libkmod/libkmod.c:" not in line)


def same(kmod: Result, kmodd: Result) -> None:
    assert kmodd.stderr.decode() == _without_libkmod_notes(kmod.stderr)
    assert kmodd.stdout.decode() == kmod.stdout.decode()
    assert kmodd.rc == kmod.rc
    assert sorted(kmodd.files) == sorted(kmod.files)
    for name, data in kmod.files.items():
        assert kmodd.files[name] == data, f"{name} differs"


# -- search order, override, external (test-depmod.c) ---------------------------------


def test_search_order_simple_prefers_the_first_listed_directory(tree: Tree, conf) -> None:
    tree.module("kernel/crypto/mod-simple.ko", simple("mod_simple"))
    tree.module("updates/mod-simple.ko", simple("mod_simple"))
    kmod, kmodd = tree.both(*conf(search="search updates built-in\n"), KVER)
    assert kmodd.dep == "updates/mod-simple.ko:\n"
    same(kmod, kmodd)


def test_search_order_same_prefix_needs_a_slash_boundary(tree: Tree, conf) -> None:
    tree.module("foo/mod-simple.ko", simple("mod_simple"))
    tree.module("foobar/mod-simple.ko", simple("mod_simple"))
    kmod, kmodd = tree.both(*conf(search="search foobar foo built-in\n"), KVER)
    assert kmodd.dep == "foobar/mod-simple.ko:\n"
    same(kmod, kmodd)


def test_search_order_external_first_wins_over_directories(tree: Tree, conf,
                                                           tmp_path) -> None:
    external = f"{tmp_path}/external"
    tree.module("foo/mod-simple.ko", simple("mod_simple"))
    tree.module("foobar/mod-simple.ko", simple("mod_simple"))
    tree.external(external, simple("mod_simple"))
    args = conf(external=f"external 4\\.4\\..* {external}\n",
                search="search external foobar foo built-in\n")
    kmod, kmodd = tree.both(*args, KVER)
    assert kmodd.dep == f"{external}/mod-simple.ko:\n"
    same(kmod, kmodd)


def test_search_order_external_last_loses_to_directories(tree: Tree, conf,
                                                         tmp_path) -> None:
    external = f"{tmp_path}/external"
    tree.module("foo/mod-simple.ko", simple("mod_simple"))
    tree.module("foobar/mod-simple.ko", simple("mod_simple"))
    tree.external(external, simple("mod_simple"))
    args = conf(external=f"external 4\\.4\\..* {external}\n",
                search="search foobar foo built-in external\n")
    kmod, kmodd = tree.both(*args, KVER)
    assert kmodd.dep == "foobar/mod-simple.ko:\n"
    same(kmod, kmodd)


def test_search_order_override_beats_search(tree: Tree, conf) -> None:
    tree.module("foo/mod-simple.ko", simple("mod_simple"))
    tree.module("override/mod-simple.ko", simple("mod_simple"))
    args = conf(override="override mod-simple 4.4.4 override\n", search="search foo built-in\n")
    kmod, kmodd = tree.both(*args, KVER)
    assert kmodd.dep == "override/mod-simple.ko:\n"
    same(kmod, kmodd)


def test_override_for_another_kernel_is_ignored_with_a_note(tree: Tree, conf) -> None:
    tree.module("foo/mod-simple.ko", simple("mod_simple"))
    tree.module("override/mod-simple.ko", simple("mod_simple"))
    args = conf(override="override mod-simple 5\\..* override\n", search="search foo\n")
    kmod, kmodd = tree.both(*args, "-vv", KVER)
    assert kmodd.dep == "foo/mod-simple.ko:\n"
    # depmod.d lines are read like modprobe.d lines: the backslash escapes the dot away.
    assert b"override.conf:1: override kernel did not match 5..*\n" in kmodd.stderr
    same(kmod, kmodd)


def test_without_search_lines_updates_wins_and_ties_keep_the_first_found(tree: Tree) -> None:
    tree.module("kernel/a/mod-simple.ko", simple("mod_simple"))
    tree.module("updates/b/mod-simple.ko", simple("mod_simple"))
    tree.module("extra/mod-other.ko", simple("mod_other"))
    tree.module("extra2/mod-other.ko", simple("mod_other"))
    kmod, kmodd = tree.both(KVER)
    assert "updates/b/mod-simple.ko:\n" in kmodd.dep
    same(kmod, kmodd)


def test_exclude_skips_directories_by_name(tree: Tree, conf) -> None:
    tree.module("kernel/mod-a.ko", simple("mod_a"))
    tree.module("kernel/skipme/mod-b.ko", simple("mod_b"))
    tree.module("build/mod-c.ko", simple("mod_c"))
    tree.module("source/mod-d.ko", simple("mod_d"))
    kmod, kmodd = tree.both(*conf(exclude="exclude skipme\n"), KVER)
    assert kmodd.dep == "kernel/mod-a.ko:\n"
    same(kmod, kmodd)


def test_a_config_path_may_be_a_single_file_of_any_name(tree: Tree, tmp_path) -> None:
    tree.module("kernel/mod-simple.ko", simple("mod_simple"))
    tree.module("updates/mod-simple.ko", simple("mod_simple"))
    config = f"{tmp_path}/my-depmod-settings"
    with open(config, "w") as f:
        f.write("search built-in updates\n")
    kmod, kmodd = tree.both("-C", config, KVER)
    assert kmodd.dep == "kernel/mod-simple.ko:\n"
    same(kmod, kmodd)


def test_bad_config_lines_are_reported_and_skipped(tree: Tree, conf) -> None:
    tree.module("kernel/mod-a.ko", simple("mod_a"))
    args = conf(bad="frobnicate all\noverride only-two\n  # indented comment\n"
                    "include other.conf\nsearch\n")
    kmod, kmodd = tree.both(*args, "-vv", KVER)
    assert b"ignoring bad line starting with 'frobnicate'" in kmodd.stderr
    assert b"command include not implemented yet" in kmodd.stderr
    same(kmod, kmodd)


# -- output directory ---------------------------------------------------------------------


def test_outdir_writes_elsewhere_and_leaves_the_tree_alone(tree: Tree, tmp_path) -> None:
    tree.module("kernel/drivers/scsi/scsi_mod.ko", simple("scsi_mod", exports=("scsi_x",)))
    tree.module("kernel/drivers/scsi/hpsa.ko", simple(
        "hpsa", needs=("scsi_x",), modinfo=("alias=pci:v0000103Cd*sv*sd*bc01sc04i*",)))
    tree.order("kernel/drivers/scsi/scsi_mod.ko", "kernel/drivers/scsi/hpsa.ko")
    before = sorted(os.listdir(tree.moddir))
    outdir = f"{tmp_path}/outdir"
    kmodd = tree.kmodd("-b", tree.root, "-o", outdir, KVER,
                       outdir=f"{outdir}/lib/modules/{KVER}")
    assert sorted(os.listdir(tree.moddir)) == before
    assert kmodd.dep == ("kernel/drivers/scsi/scsi_mod.ko:\n"
                         "kernel/drivers/scsi/hpsa.ko: kernel/drivers/scsi/scsi_mod.ko\n")
    same(tree.kmod("-b", tree.root, KVER), kmodd)


# -- cycles ---------------------------------------------------------------------------------

LOOPS = {"a": "BFG", "b": "CFG", "c": "A", "d": "E", "e": "D", "f": "", "g": "",
         "h": "I", "i": "J", "j": "HK", "k": "H"}
DETECT_LOOP_STDERR = (
    "depmod: ERROR: Cycle detected: mod_loop_d -> mod_loop_e -> mod_loop_d\n"
    "depmod: ERROR: Cycle detected: mod_loop_i -> mod_loop_j -> mod_loop_k -> mod_loop_h"
    " -> mod_loop_i\n"
    "depmod: ERROR: Cycle detected: mod_loop_i -> mod_loop_j -> mod_loop_h -> mod_loop_i\n"
    "depmod: ERROR: Cycle detected: mod_loop_c -> mod_loop_a -> mod_loop_b -> mod_loop_c\n"
    "depmod: ERROR: Found 9 modules in dependency cycles!\n"
)


def test_detect_loop_reports_kmods_exact_lines_and_writes_nothing(tree: Tree) -> None:
    # kmod's own fixture: an empty modules.order, so the walks follow kmod's hash order.
    for c, needs in LOOPS.items():
        tree.module(f"kernel/mod-loop-{c}.ko", simple(
            f"mod_loop_{c}", exports=(f"print{c.upper()}",),
            needs=("_printk", *(f"print{x}" for x in needs))))
    tree.write("modules.order", "")
    kmod, kmodd = tree.both(KVER)
    assert kmodd.stderr.decode() == DETECT_LOOP_STDERR
    assert kmodd.rc == 1
    assert kmodd.files == {}
    same(kmod, kmodd)


def test_a_module_after_a_cycle_is_reported_the_way_kmod_reports_it(tree: Tree) -> None:
    tree.module("kernel/ma.ko", simple("ma", exports=("pa",), needs=("pb", "pc")))
    tree.module("kernel/mb.ko", simple("mb", exports=("pb",), needs=("pa",)))
    tree.module("kernel/mc.ko", simple("mc", exports=("pc",), needs=("px",)))
    tree.module("kernel/mx.ko", simple("mx", exports=("px",)))
    tree.order("kernel/ma.ko", "kernel/mb.ko", "kernel/mc.ko", "kernel/mx.ko")
    kmod, kmodd = tree.both(KVER)
    assert kmodd.stderr.decode() == (
        "depmod: ERROR: Cycle detected: ma -> mb -> ma\n"
        "depmod: ERROR: Cycle detected: mc\n"  # kmod's quirk: mc is only after the cycle
        "depmod: ERROR: Found 2 modules in dependency cycles!\n")
    same(kmod, kmodd)


def test_a_cycle_kmod_would_walk_forever_is_reported_and_depmod_ends(tree: Tree) -> None:
    # kmod 30 hangs here: its walk from ma reaches the md <-> me cycle through mc, and
    # circles it for ever. kmodd reports that cycle where it meets it.
    tree.module("kernel/ma.ko", simple("ma", exports=("pa",), needs=("pb", "pc")))
    tree.module("kernel/mb.ko", simple("mb", exports=("pb",), needs=("pa",)))
    tree.module("kernel/mc.ko", simple("mc", exports=("pc",), needs=("pd",)))
    tree.module("kernel/md.ko", simple("md", exports=("pd",), needs=("pe",)))
    tree.module("kernel/me.ko", simple("me", exports=("pe",), needs=("pd",)))
    tree.order(*(f"kernel/m{c}.ko" for c in "abcde"))
    kmodd = tree.kmodd("-b", tree.root, KVER)
    assert kmodd.stderr.decode() == (
        "depmod: ERROR: Cycle detected: md -> me -> md\n"
        "depmod: ERROR: Cycle detected: ma -> mb -> ma\n"
        "depmod: ERROR: Cycle detected: mc\n"
        "depmod: ERROR: Found 4 modules in dependency cycles!\n")
    assert kmodd.rc == 1
    assert kmodd.files == {}
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["depmod", "-b", tree.root, KVER], timeout=3, capture_output=True)


# -- weak dependencies, modules.order, compression -------------------------------------------


def test_weakdep_is_not_written_as_kmod_30_does_not_know_it(tree: Tree) -> None:
    tree.module("kernel/mod-simple.ko", simple("mod_simple"))
    tree.module("kernel/mod-weakdep.ko", simple(
        "mod_weakdep", modinfo=("license=GPL", "weakdep=mod-simple", "softdep=pre: mod-simple")))
    kmod, kmodd = tree.both(KVER)
    assert "modules.weakdep" not in kmodd.files
    assert kmodd.files["modules.softdep"] == (
        b"# Soft dependencies extracted from modules themselves.\n"
        b"softdep mod_weakdep pre: mod-simple\n")
    same(kmod, kmodd)


def test_weak_references_create_dependencies(tree: Tree) -> None:
    tree.module("kernel/base.ko", simple("base", exports=("b1", "b2")))
    tree.module("kernel/user.ko", simple("user", weak=("b2",)))
    tree.order("kernel/base.ko", "kernel/user.ko")
    kmod, kmodd = tree.both(KVER)
    assert kmodd.dep == "kernel/base.ko:\nkernel/user.ko: kernel/base.ko\n"
    same(kmod, kmodd)


def _compress(data: bytes, tool: str) -> bytes:
    return subprocess.run([tool, "-q", "-c"], input=data, capture_output=True,
                          check=True).stdout


def test_modules_order_matches_compressed_modules(tree: Tree) -> None:
    cciss = build_ko(simple("cciss", modinfo=("alias=pci:v00000E11d0000B060sv*",)))
    hpsa = build_ko(simple("hpsa", needs=("scsi_x",), modinfo=("alias=pci:v0000103Cd*",)))
    scsi = build_ko(simple("scsi_mod", exports=("scsi_x",), modinfo=("alias=scsi",)))
    tree.write("kernel/drivers/block/cciss.ko.xz", _compress(cciss, "xz"))
    tree.write("kernel/drivers/scsi/hpsa.ko.zst", _compress(hpsa, "zstd"))
    tree.write("kernel/drivers/scsi/scsi_mod.ko.xz", _compress(scsi, "xz"))
    tree.write("modules.order", "#336\nkernel/drivers/block/cciss.ko\n#2094\n"
                                "kernel/drivers/scsi/scsi_mod.ko\n#2137\n"
                                "kernel/drivers/scsi/hpsa.ko\n\n")
    kmod, kmodd = tree.both(KVER)
    assert kmodd.files["modules.alias"] == (
        b"# Aliases extracted from modules themselves.\n"
        b"alias pci:v00000E11d0000B060sv* cciss\nalias scsi scsi_mod\n"
        b"alias pci:v0000103Cd* hpsa\n")
    assert kmodd.dep.splitlines()[-1] == \
        "kernel/drivers/scsi/hpsa.ko.zst: kernel/drivers/scsi/scsi_mod.ko.xz"
    same(kmod, kmodd)


def test_gzip_modules_read_like_the_others(tree: Tree) -> None:
    # kmod 30 on Debian is built without zlib and skips .ko.gz; kmodd reads them.
    tree.write("kernel/base.ko.gz", _compress(build_ko(simple("base", exports=("b1",))),
                                              "gzip"))
    tree.module("kernel/user.ko", simple("user", needs=("b1",)))
    tree.order("kernel/base.ko", "kernel/user.ko")
    kmodd = tree.kmodd("-b", tree.root, KVER)
    assert kmodd.dep == "kernel/base.ko.gz:\nkernel/user.ko: kernel/base.ko.gz\n"


def test_broken_modules_are_named_and_the_rest_still_indexed(tree: Tree) -> None:
    good = build_ko(simple("good", exports=("g1",), modinfo=("alias=foo",)))
    tree.write("kernel/good.ko", good)
    tree.module("kernel/user.ko", simple("user", needs=("g1",)))
    tree.write("kernel/text.ko", b"this is not an ELF file\n")
    tree.write("kernel/tiny.ko", b"abc")
    tree.write("kernel/empty.ko", b"")
    tree.write("kernel/cut.ko", good[: len(good) // 2])
    xz = _compress(good, "xz")
    tree.write("kernel/xzcut.ko.xz", xz[: len(xz) // 2])
    tree.write("kernel/xzbad.ko.xz", xz[:40] + bytes(b ^ 0x55 for b in xz[40:80]) + xz[80:])
    zst = _compress(good, "zstd")
    tree.write("kernel/zstcut.ko.zst", zst[: len(zst) // 2])
    tree.order("kernel/good.ko", "kernel/user.ko")
    kmod, kmodd = tree.both(KVER)
    assert kmodd.rc == 0
    assert (f"depmod: ERROR: failed to load symbols from {tree.moddir}/kernel/text.ko: "
            "Exec format error\n").encode() in kmodd.stderr
    assert (f"depmod: ERROR: failed to load symbols from {tree.moddir}/kernel/xzbad.ko.xz: "
            "Invalid argument\n").encode() in kmodd.stderr
    assert kmodd.dep.startswith("kernel/good.ko:\nkernel/user.ko: kernel/good.ko\n")
    same(kmod, kmodd)


# -- what the modules say --------------------------------------------------------------------


def test_aliases_softdeps_and_device_nodes(tree: Tree) -> None:
    tree.module("kernel/fuse.ko", simple("fuse", modinfo=(
        "alias=fs-fuse", "alias=devname:fuse", "alias=char-major-10-229", "softdep=pre: cuse")))
    tree.module("kernel/loop.ko", simple("loop", modinfo=(
        "alias=block-major-7-*", "alias=devname:loop-control", "alias=char-major-10-237")))
    tree.module("kernel/nomajor.ko", simple("nomajor", modinfo=("alias=devname:lonely",)))
    tree.module("kernel/brackets.ko", simple("brackets", modinfo=(
        "alias=usb:v1234p[0-9]*d*", "alias=bad]bracket", "alias=bad[open")))
    tree.order("kernel/fuse.ko", "kernel/loop.ko", "kernel/nomajor.ko", "kernel/brackets.ko")
    kmod, kmodd = tree.both(KVER)
    assert kmodd.files["modules.devname"] == (
        b"# Device nodes to trigger on-demand module loading.\n"
        b"fuse fuse c10:229\nloop loop-control c10:237\n")
    assert (b"depmod: ERROR: Module 'nomajor' has devname (lonely) but lacks major and minor "
            b"information. Ignoring.\n") in kmodd.stderr
    assert b"depmod: WARNING: Unmatched bracket in bad]bracket\n" in kmodd.stderr
    same(kmod, kmodd)


def test_builtin_indexes_come_from_the_build_files(tree: Tree) -> None:
    tree.module("kernel/mod-a.ko", simple("mod_a"))
    tree.write("modules.builtin", "kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c-generic.ko\n"
                                  "1bad-line\nkernel/net/unix/unix.ko\n")
    tree.write("modules.builtin.modinfo",
               b"ext4.alias=fs-ext4\0ext4.license=GPL\0crc32c_generic.alias=crypto-crc32c\0"
               b"noequals.alias\0unix.alias=net-pf-1\0unix.alias=bad]alias\0")
    kmod, kmodd = tree.both(KVER)
    assert b"depmod: ERROR: Invalid modules.builtin line: 1bad-line\n\n" in kmodd.stderr
    same(kmod, kmodd)


def test_missing_build_files_give_empty_indexes_and_warnings(tree: Tree) -> None:
    tree.module("kernel/mod-a.ko", simple("mod_a"))
    kmod, kmodd = tree.both(KVER)
    assert kmodd.files["modules.builtin.bin"] == b""
    assert kmodd.files["modules.builtin.alias.bin"] == b""
    assert (f"depmod: WARNING: could not open modules.order at {tree.moddir}: "
            "No such file or directory\n").encode() in kmodd.stderr
    same(kmod, kmodd)


# -- options --------------------------------------------------------------------------------


def _symbols_tree(tree: Tree) -> None:
    tree.module("kernel/base.ko", simple("base", exports=("b1", "b2"), crcs={"b1": 0x1234,
                                                                          "b2": 0x99}))
    tree.module("kernel/user.ko", simple(
        "user", needs=("b1", "b2", "printk", "missing"), weak=("weakmiss",),
        versions=((0x1234, "b1"), (0x77, "b2"), (0xABCD, "printk"), (0x1, "module_layout"))))
    tree.order("kernel/base.ko", "kernel/user.ko")


def test_errsyms_with_system_map_warns_about_unknown_symbols(tree: Tree, tmp_path) -> None:
    _symbols_tree(tree)
    system_map = f"{tmp_path}/System.map"
    with open(system_map, "w") as f:
        f.write("ffffffff81000000 T _text\nffffffff82000000 r __ksymtab_printk\nbroken\n")
    kmod, kmodd = tree.both("-e", "-F", system_map, KVER)
    assert (f"depmod: WARNING: {tree.moddir}/kernel/user.ko needs unknown symbol missing\n"
            ).encode() in kmodd.stderr
    assert b"weakmiss" not in kmodd.stderr
    same(kmod, kmodd)


def test_errsyms_with_symvers_reports_version_disagreements(tree: Tree, tmp_path) -> None:
    _symbols_tree(tree)
    symvers = f"{tmp_path}/Module.symvers"
    with open(symvers, "w") as f:
        f.write("0x0000abcd\tprintk\tvmlinux\tEXPORT_SYMBOL\n0xzz\tbad\tvmlinux\tEXPORT\n"
                "0x00000001\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\n")
    kmod, kmodd = tree.both("-e", "-E", symvers, KVER)
    assert (f"depmod: WARNING: {tree.moddir}/kernel/user.ko disagrees about version of "
            "symbol b2\n").encode() in kmodd.stderr
    same(kmod, kmodd)


def test_errsyms_alone_needs_a_symbol_source(tree: Tree) -> None:
    _symbols_tree(tree)
    kmod, kmodd = tree.both("-e", KVER)
    assert kmodd.stderr.startswith(b"depmod: WARNING: -e needs -E or -F\n")
    same(kmod, kmodd)


def test_verbose_reports_each_dependency_on_stdout(tree: Tree) -> None:
    _symbols_tree(tree)
    kmod, kmodd = tree.both("-v", KVER)
    assert kmodd.stdout.decode() == (
        f'{tree.moddir}/kernel/user.ko needs "b1": {tree.moddir}/kernel/base.ko\n')
    same(kmod, kmodd)


def test_dry_run_prints_the_text_files_and_writes_nothing(tree: Tree) -> None:
    _symbols_tree(tree)
    kmod, kmodd = tree.both("-n", KVER)
    assert kmodd.files == {}
    assert kmodd.stdout.startswith(b"kernel/base.ko:\nkernel/user.ko: kernel/base.ko\n"
                                   b"# Aliases extracted from modules themselves.\n")
    same(kmod, kmodd)


def test_quick_mode_does_nothing_when_no_module_is_newer(tree: Tree) -> None:
    _symbols_tree(tree)
    results = []
    for run in (tree.kmod, tree.kmodd):
        tree.write("modules.dep", "stale\n")
        os.utime(f"{tree.moddir}/modules.dep", (2_000_000_000, 2_000_000_000))
        results.append(run("-A", "-b", tree.root, KVER))
    kmod, kmodd = results
    assert kmodd.files == {"modules.dep": b"stale\n"}
    same(kmod, kmodd)


def test_quick_mode_rebuilds_when_a_module_is_newer(tree: Tree) -> None:
    _symbols_tree(tree)
    tree.write("modules.dep", "stale\n")
    os.utime(f"{tree.moddir}/modules.dep", (1_000_000_000, 1_000_000_000))
    kmodd = tree.kmodd("-A", "-b", tree.root, KVER)
    assert kmodd.dep == "kernel/base.ko:\nkernel/user.ko: kernel/base.ko\n"


def test_explicit_module_files_are_indexed_alone(tree: Tree) -> None:
    _symbols_tree(tree)
    base, user = f"{tree.moddir}/kernel/base.ko", f"{tree.moddir}/kernel/user.ko"
    kmod, kmodd = tree.both(KVER, user, base)
    assert kmodd.dep == "kernel/base.ko:\nkernel/user.ko: kernel/base.ko\n"
    same(kmod, kmodd)


@pytest.mark.parametrize("args", [
    ("-o",), ("--basedir",), ("-x",), ("--bogus",), ("--all=1",), ("--s",), ("-P", "ab"),
    ("not-a-version",), ("-m", "-u", KVER), ("--unresolved-error", KVER),
    (KVER, "relative/path.ko"), (KVER, "/does/not/exist.ko"),
])
def test_command_line_errors_read_like_kmods(tree: Tree, args: tuple[str, ...]) -> None:
    tree.module("kernel/mod-a.ko", simple("mod_a"))
    if args == ("-o",):  # kmod 30 has no -o: compare kmodd's message with glibc's wording
        kmodd = tree.kmodd("-b", tree.root, "-o")
        assert kmodd.stderr == b"depmod: option requires an argument -- 'o'\n"
        return
    kmod, kmodd = tree.both(*args)
    same(kmod, kmodd)


def test_warn_reports_duplicate_aliases(tree: Tree) -> None:
    tree.module("kernel/mod-a.ko", simple("mod_a", modinfo=("alias=same", "alias=same")))
    kmod, kmodd = tree.both("-w", KVER)
    assert b"depmod: WARNING: duplicate module alias:\nsame mod_a\n" in kmodd.stderr
    same(kmod, kmodd)


def test_version_and_help(tree: Tree) -> None:
    kmodd = tree.kmodd("-V")
    assert kmodd.stdout.startswith(b"kmod version 30\n")
    kmod, kmodd = tree.both("-h")
    same(kmod, kmodd)


def test_symbol_prefix_and_dotted_names_are_stripped_on_lookup(tree: Tree, tmp_path) -> None:
    # -P _ : "_base_fn" is exported as "base_fn"; PPC64 callers need ".base_fn".
    tree.module("kernel/base.ko", simple("base", exports=("_base_fn", "plain_fn")))
    tree.module("kernel/dotted.ko", simple("dotted", needs=(".base_fn",)))
    tree.module("kernel/prefixed.ko", simple("prefixed", needs=("_plain_fn", "_missing")))
    tree.order("kernel/base.ko", "kernel/dotted.ko", "kernel/prefixed.ko")
    system_map = f"{tmp_path}/System.map"
    with open(system_map, "w") as f:
        f.write("ffff r ___ksymtab_printk\n")
    for args in (("-P", "_", KVER), ("-P", "_", "-e", "-F", system_map, KVER), (KVER,)):
        kmod, kmodd = tree.both(*args)
        same(kmod, kmodd)
    kmodd = tree.kmodd("-b", tree.root, "-P", "_", KVER)
    assert kmodd.dep == ("kernel/base.ko:\nkernel/dotted.ko: kernel/base.ko\n"
                         "kernel/prefixed.ko: kernel/base.ko\n")
