"""kmodd.core.depmod.build and depmod_output: order, symbols, dependencies, files; no I/O."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.depmod.build import (
    DepmodOptions,
    FactsOptions,
    ModuleFacts,
    depmod_module,
    fgets_chunks,
    hash_order,
    module_facts,
    modules_order,
    parse_symvers,
    parse_system_map,
    resolve_dependencies,
)
from kmodd.core.depmod.config import Message
from kmodd.core.depmod.hash import kmod_hash, kmod_hashes
from kmodd.core.depmod.output import BuildFile, render_outputs
from kmodd.core.priority import Priority
from tests.kobuild import KoSpec, build_ko

DIRNAME = "/lib/modules/4.4.4"


# -- kmod's hash ------------------------------------------------------------------------


def test_kmod_hash_values_including_signed_chars() -> None:
    # Values of kmod's hash_superfast on x86 (char is signed there).
    assert [kmod_hash(k) for k in (b"x", b"xy", b"xyz", b"wxyz", b"symbol_name_long",
                                   b"mod_loop_a", b"a\xff", b"\xe9", b"ab\xe9")] == [
        260209567, 1477745831, 3065802387, 1420777313, 3391388173, 3131312863,
        4255105837, 1776944832, 3034567861]


@given(st.lists(st.binary(max_size=40), max_size=60))
def test_hashing_many_keys_at_once_agrees_with_one_at_a_time(keys: list[bytes]) -> None:
    assert kmod_hashes(keys) == [kmod_hash(k) for k in keys]


# -- which module comes where -------------------------------------------------------------


def _mods(*rels: str) -> list:  # type: ignore[type-arg]
    return [depmod_module(f"{DIRNAME}/{r}", DIRNAME) for r in rels]


def test_module_paths_relative_and_with_ko_in_place_of_the_compression() -> None:
    m = depmod_module(f"{DIRNAME}/kernel/sound/snd-pcm.ko.xz", DIRNAME)
    assert (m.modname, m.relpath, m.uncrelpath) == (
        "snd_pcm", "kernel/sound/snd-pcm.ko.xz", "kernel/sound/snd-pcm.ko")
    ext = depmod_module("/opt/ext/mod-x.ko", DIRNAME)
    assert (ext.relpath, ext.uncrelpath, ext.output_path) == (None, None, "/opt/ext/mod-x.ko")


def test_modules_order_puts_listed_modules_first_and_the_last_listing_wins() -> None:
    mods = _mods("kernel/a.ko", "kernel/b.ko.zst", "kernel/c.ko", "kernel/d.ko")
    order = b"kernel/c.ko\n#comment\nkernel/b.ko\nkernel/a.ko\n\nkernel/c.ko\n"
    positions, messages = modules_order(mods, order, DIRNAME)
    unlisted = [i for i in hash_order(mods) if mods[i].modname == "d"]
    assert [mods[i].modname for i in positions] == ["b", "a", "c"] + \
        [mods[i].modname for i in unlisted]
    assert messages == []


def test_unlisted_modules_keep_kmods_hash_order() -> None:
    names = [f"mod_loop_{c}" for c in "abcdefghijk"]
    mods = _mods(*(f"kernel/{n}.ko" for n in names))
    positions, _ = modules_order(mods, b"", DIRNAME)
    assert [mods[i].modname[-1] for i in positions] == list("dibahjfcgke")


def test_a_last_line_without_newline_stops_the_sort() -> None:
    mods = _mods("kernel/b.ko", "kernel/a.ko")
    positions, messages = modules_order(mods, b"kernel/a.ko\nkernel/b.ko", DIRNAME)
    assert positions == hash_order(mods)
    assert messages == [Message(Priority.ERR, f"{DIRNAME}/modules.order:2 corrupted line misses "
                                             "'\\n'\n")]


def test_fgets_chunks_cut_long_lines_like_a_path_max_buffer() -> None:
    assert fgets_chunks(b"a\nbb\n" + b"x" * 5000 + b"\nlast") == [
        b"a\n", b"bb\n", b"x" * 4095, b"x" * 905 + b"\n", b"last"]


# -- symbols from the kernel ----------------------------------------------------------------


def test_symvers_takes_vmlinux_lines_and_reports_bad_crcs() -> None:
    ks = parse_symvers(b"0x0000abcd\tprintk\tvmlinux\tEXPORT_SYMBOL\n"
                       b"0x00000001\tfrom_mod\tdrivers/x\tEXPORT_SYMBOL\n"
                       b"0xzz\tbad\tvmlinux\tEXPORT_SYMBOL\n", "Module.symvers")
    assert ks.crcs == {"printk": 0xABCD, "__this_module": 0, "_GLOBAL_OFFSET_TABLE_": 0,
                       "TOC.": 0}
    assert ks.messages == (Message(
        Priority.ERR, "Module.symvers:3 Invalid symbol version 0xzz: No such file or directory\n"),)


def test_system_map_takes_ksymtab_entries() -> None:
    ks = parse_system_map(b"ffff T _text\nffff r __ksymtab_printk\nnospaces\n", "System.map")
    assert set(ks.crcs) == {"printk", "__this_module", "_GLOBAL_OFFSET_TABLE_", "TOC."}
    # kmod prints the line with its newline, then its own
    assert ks.messages == (Message(Priority.ERR, "System.map:3: invalid line: nospaces\n\n"),)


# -- from module files to the files depmod writes ------------------------------------------


def _facts(spec: KoSpec) -> ModuleFacts:
    return module_facts(build_ko(spec), f"{DIRNAME}/kernel/{spec.name}.ko", FactsOptions())


def test_facts_of_a_module_name_what_depmod_uses() -> None:
    f = _facts(KoSpec("m", modinfo=["alias=a1", "license=GPL", "softdep=pre: x", "alias=a2"],
                      exports=["e1"], needs=["n1"], weak_needs=["w1"]))
    assert (f.aliases, f.softdeps, f.exports, f.needs, f.messages) == (
        ("a1", "a2"), ("pre: x",), ("e1",), ("n1", "w1"), ())


def test_unreadable_files_give_one_error_with_libkmods_errno() -> None:
    assert module_facts(b"nope, not ELF", "/x.ko", FactsOptions()).messages == (
        Message(Priority.ERR, "failed to load symbols from /x.ko: Exec format error\n"),)
    assert module_facts(None, "/y.ko", FactsOptions(), errno.EACCES).messages == (
        Message(Priority.ERR, "failed to load symbols from /y.ko: Permission denied\n"),)
    assert module_facts(None, "/gone.ko", FactsOptions(), errno.ENOENT).messages == ()


def _outputs(specs: list[KoSpec]) -> dict[str, bytes]:
    mods = _mods(*(f"kernel/{s.name}.ko" for s in specs))
    facts = [_facts(s) for s in specs]
    graph, events = resolve_dependencies(mods, facts, None, DepmodOptions())
    assert graph is not None and events == []
    files = render_outputs(mods, facts, graph, BuildFile("modules.builtin", b""),
                           BuildFile("modules.builtin.modinfo", b""), DIRNAME, DepmodOptions())
    return {f.name: f.data for f in files if f.data is not None}


def test_dependency_lines_list_the_whole_closure_closest_users_first() -> None:
    out = _outputs([
        KoSpec("top", needs=["mid1", "mid2"]),
        KoSpec("mid", exports=["mid1", "mid2"], needs=["low1"]),
        KoSpec("other", exports=["oth"], needs=["low1"]),
        KoSpec("low", exports=["low1"]),
        KoSpec("user", needs=["oth", "mid1"]),
    ])
    assert out["modules.dep"].decode() == (
        "kernel/top.ko: kernel/mid.ko kernel/low.ko\n"
        "kernel/mid.ko: kernel/low.ko\n"
        "kernel/other.ko: kernel/low.ko\n"
        "kernel/low.ko:\n"
        "kernel/user.ko: kernel/other.ko kernel/mid.ko kernel/low.ko\n")


def test_the_last_module_to_export_a_symbol_owns_it() -> None:
    out = _outputs([KoSpec("first", exports=["dup"]), KoSpec("second", exports=["dup"]),
                    KoSpec("user", needs=["dup"])])
    assert out["modules.dep"].decode().splitlines()[-1] == "kernel/user.ko: kernel/second.ko"
    assert out["modules.symbols"] == (b"# Aliases for symbols, used by symbol_request().\n"
                                      b"alias symbol:dup second\n")


def test_dry_run_renders_only_text_files() -> None:
    mods = _mods("kernel/a.ko")
    facts = [_facts(KoSpec("a"))]
    graph, _ = resolve_dependencies(mods, facts, None, DepmodOptions(to_stdout=True))
    assert graph is not None
    files = render_outputs(mods, facts, graph, BuildFile("modules.builtin", None, 2),
                           BuildFile("modules.builtin.modinfo", None, 2), DIRNAME,
                           DepmodOptions(to_stdout=True))
    assert [f.name for f in files] == ["modules.dep", "modules.alias", "modules.softdep",
                                       "modules.symbols", "modules.devname"]
    assert all(f.events == () for f in files)  # no warning about the missing build files


def test_a_non_ascii_alias_stops_the_output_like_kmods_fatal_error() -> None:
    mods = _mods("kernel/a.ko")
    facts = [ModuleFacts(aliases=("caf\xe9",))]
    graph, _ = resolve_dependencies(mods, facts, None, DepmodOptions())
    assert graph is not None
    files = render_outputs(mods, facts, graph, BuildFile("modules.builtin", b""),
                           BuildFile("modules.builtin.modinfo", b""), DIRNAME, DepmodOptions())
    assert [(f.name, f.data is None) for f in files] == [
        ("modules.dep", False), ("modules.dep.bin", False), ("modules.alias", False),
        ("modules.alias.bin", True)]
    assert files[-1].events[0].message is not None
    assert files[-1].events[0].message.level is Priority.CRIT
