"""core.kmod.resolve: from a name or alias to module objects, in kmod 30's lookup order.

Most tests run the Resolver over in-memory indexes (`FakeIndexes`, which also records what
it was asked); the lookup order is held to the real `modprobe -R` on a depmod-made tree.
"""

from __future__ import annotations

from errno import EEXIST, EINVAL, ENAMETOOLONG, ENOENT
from pathlib import Path

import pytest

from kmodd.core.kmod.config import Config, Softdep
from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.core.kmod.resolve import Builtin, Module, ModuleLookupError, Resolver
from tests.core.kmod.realkmod import make_tree, modprobe, tree_config, tree_resolver
from tests.fakes import FakeIndexes, FakeSystemView
from tests.toolrun import needs_mount_namespace

MODDIR = FakeIndexes.moddir


def resolver(indexes: FakeIndexes | None = None, config: Config | None = None,
             *paths: str) -> Resolver:
    return Resolver(indexes or FakeIndexes(), config or Config(), FakeSystemView(*paths))


def names(mods: list[Module]) -> list[tuple[str, str | None]]:
    return [(m.name, m.alias) for m in mods]


# -- the lookup chain -------------------------------------------------------------------------

EVERY_SOURCE = ("config-alias", "modules.dep", "install-command", "modules.alias",
                "modules.builtin", "modules.builtin.alias")


def key_everywhere(without: frozenset[str]) -> tuple[FakeIndexes, Config]:
    """`kk` in every source but those in `without`."""
    has = set(EVERY_SOURCE) - without
    indexes = FakeIndexes(
        dep={"kk": "kernel/kk.ko:"} if "modules.dep" in has else {},
        alias={"kk": ["from_alias"]} if "modules.alias" in has else {},
        builtin={"kk"} if "modules.builtin" in has else set(),
        builtin_alias={"kk": ["from_balias"]} if "modules.builtin.alias" in has else {})
    config = Config(
        aliases=(("kk", "from_config"),) if "config-alias" in has else (),
        installs=(("kk", "/bin/true"),) if "install-command" in has else ())
    return indexes, config


@pytest.mark.parametrize(("dropped", "source", "found"), [
    (0, "config-alias", [("from_config", "kk")]),
    (1, "modules.dep", [("kk", None)]),
    (2, "install-command", [("kk", None)]),
    (3, "modules.alias", [("from_alias", "kk")]),
    (4, "modules.builtin", [("kk", None)]),
    (5, "modules.builtin.alias", [("from_balias", "kk")]),
    (6, None, []),
])
def test_the_first_source_in_kmods_order_that_knows_the_key_answers(
        dropped: int, source: str | None, found: list[tuple[str, str | None]]) -> None:
    r = resolver(*key_everywhere(frozenset(EVERY_SOURCE[:dropped])))
    assert names(r.lookup("kk")) == found
    assert r.last_source == source


def test_what_each_source_marks_on_the_module_it_gives() -> None:
    dep = resolver(*key_everywhere(frozenset(EVERY_SOURCE[:1]))).lookup("kk")[0]
    assert (dep.path, dep.dep_init, dep.builtin) == (f"{MODDIR}/kernel/kk.ko", True,
                                                     Builtin.UNKNOWN)
    cmd = resolver(*key_everywhere(frozenset(EVERY_SOURCE[:2]))).lookup("kk")[0]
    assert (cmd.install, cmd.install_init, cmd.path) == ("/bin/true", True, None)
    builtin = resolver(*key_everywhere(frozenset(EVERY_SOURCE[:4]))).lookup("kk")[0]
    assert builtin.builtin is Builtin.YES
    balias = resolver(*key_everywhere(frozenset(EVERY_SOURCE[:5]))).lookup("kk")[0]
    assert balias.builtin is Builtin.YES


def test_a_remove_line_alone_also_makes_a_module_of_its_exact_key() -> None:
    r = resolver(config=Config(removes=(("kk", "/bin/rm-it"),), installs=(("k*", "/x"),)))
    (mod,) = r.lookup("kk")
    assert (mod.name, mod.remove, mod.install_init, r.last_source) == (
        "kk", "/bin/rm-it", False, "install-command")


def test_an_install_line_with_a_pattern_key_makes_no_module() -> None:
    r = resolver(config=Config(installs=(("k*", "/bin/true"),)))
    assert (r.lookup("kk"), r.last_source) == ([], None)


def test_every_config_alias_that_matches_gives_a_module_in_line_order() -> None:
    config = Config(aliases=(("usb:v*", "one"), ("usb:x", "two"), ("usb:v1?", "three"),
                             ("usb:v1*", "one")))
    r = resolver(FakeIndexes(alias={"usb:v12": ["never"]}), config)
    assert names(r.lookup("usb:v12")) == [("one", "usb:v*"), ("three", "usb:v1?"),
                                          ("one", "usb:v1*")]


def test_a_symbol_key_asks_the_symbols_index_and_never_the_dependency_index() -> None:
    indexes = FakeIndexes(dep={"symbol:f": "x.ko:"}, symbols={"symbol:f": ["a", "b"]})
    r = resolver(indexes)
    assert names(r.lookup("symbol:f")) == [("a", "symbol:f"), ("b", "symbol:f")]
    assert (r.last_source, indexes.asked) == ("modules.symbols", [("symbols", "symbol:f")])


def test_an_unknown_symbol_falls_through_to_the_alias_index() -> None:
    r = resolver(FakeIndexes(alias={"symbol:g": ["c"]}))
    assert (names(r.lookup("symbol:g")), r.last_source) == ([("c", "symbol:g")],
                                                             "modules.alias")


def test_a_key_with_a_colon_never_asks_the_dependency_or_symbols_index() -> None:
    indexes = FakeIndexes(dep={"pci:x": "x.ko:"})
    r = resolver(indexes)
    assert r.lookup("pci:x") == []
    assert indexes.asked == [("alias", "pci:x"), ("builtin", "pci:x"),
                             ("builtin_alias", "pci:x")]


def test_dashes_become_underscores_outside_brackets_before_any_index_is_asked() -> None:
    indexes = FakeIndexes(dep={"snd_foo": "snd-foo.ko:"})
    r = resolver(indexes)
    assert names(r.lookup("snd-foo")) == [("snd_foo", None)]
    r.lookup("pci:v[a-z]-x")
    assert indexes.asked[1:] == [("alias", "pci:v[a-z]_x"), ("builtin", "pci:v[a-z]_x"),
                                 ("builtin_alias", "pci:v[a-z]_x")]


@pytest.mark.parametrize("key", ["a]b", "pci:v[0001", "[", "x]["])
def test_a_key_with_unpaired_brackets_is_einval_before_any_index_is_asked(key: str) -> None:
    indexes = FakeIndexes()
    r = resolver(indexes, Config(aliases=(("*", "anything"),)))
    with pytest.raises(ModuleLookupError) as caught:
        r.lookup(key)
    assert (caught.value.errno, r.last_source, indexes.asked) == (EINVAL, None, [])


def test_a_key_is_cut_at_4095_characters() -> None:
    indexes = FakeIndexes()
    resolver(indexes).lookup("a" * 5000)
    assert indexes.asked[0] == ("dep", "a" * 4095)


@pytest.mark.parametrize(("keylen", "error"), [(4093, None), (4094, ENAMETOOLONG)])
def test_an_alias_and_name_longer_than_path_max_together_is_enametoolong(
        keylen: int, error: int | None) -> None:
    key = "p:" + "a" * (keylen - 2)
    r = resolver(FakeIndexes(alias={key: ["m"]}))
    if error is None:
        assert names(r.lookup(key)) == [("m", key)]
        return
    with pytest.raises(ModuleLookupError) as caught:
        r.lookup(key)
    assert caught.value.errno == error


# -- module objects ---------------------------------------------------------------------------

def test_one_object_per_name_and_one_per_name_and_alias() -> None:
    r = resolver(FakeIndexes(dep={"m": "m.ko:"}, alias={"a:1": ["m"], "a:2": ["m"]}))
    (by_name,) = r.lookup("m")
    assert r.lookup("m")[0] is by_name
    (one,) = r.lookup("a:1")
    (two,) = r.lookup("a:2")
    assert r.lookup("a:1")[0] is one
    assert len({id(by_name), id(one), id(two)}) == 3


def test_a_dependency_line_gives_the_path_and_the_dependencies_in_load_order() -> None:
    line = "kernel/m.ko: kernel/b.ko /abs/c.ko\tkernel/d.ko"
    r = resolver(FakeIndexes(dep={"m": line}), None, f"{MODDIR}/kernel/b.ko", "/abs/c.ko",
                 f"{MODDIR}/kernel/d.ko")
    (m,) = r.lookup("m")
    assert m.path == f"{MODDIR}/kernel/m.ko"
    assert [(d.name, d.path, d.builtin) for d in r.dependencies(m)] == [
        ("d", f"{MODDIR}/kernel/d.ko", Builtin.NO), ("c", "/abs/c.ko", Builtin.NO),
        ("b", f"{MODDIR}/kernel/b.ko", Builtin.NO)]


def test_a_missing_dependency_file_leaves_no_dependencies_and_says_which() -> None:
    r = resolver(FakeIndexes(dep={"m": "kernel/m.ko: kernel/gone.ko"}))
    (m,) = r.lookup("m")
    assert (r.dependencies(m), m.dep_init) == ([], False)
    assert r.records[-1] == LibkmodEvent(
        "dep_path", f"ctx=(ctx) path={MODDIR}/kernel/gone.ko error=No such file or directory\n")


def test_a_module_not_in_the_dependency_index_has_no_path_and_no_dependencies() -> None:
    r = resolver()
    m = r.new_from_name("x")
    assert (r.path(m), r.dependencies(m)) == (None, [])


def test_a_path_names_its_module_relative_to_the_current_directory() -> None:
    r = resolver(None, None, "/work/sub/snd-x.ko.xz")
    m = r.new_from_path("sub/snd-x.ko.xz")
    assert (m.name, m.path, m.builtin) == ("snd_x", "/work/sub/snd-x.ko.xz", Builtin.NO)


def test_a_missing_path_is_enoent_and_a_second_path_for_a_name_is_eexist() -> None:
    r = resolver(None, None, "/a/m.ko", "/b/m.ko")
    with pytest.raises(ModuleLookupError) as missing:
        r.new_from_path("/c/m.ko")
    r.new_from_path("/a/m.ko")
    with pytest.raises(ModuleLookupError) as conflict:
        r.new_from_path("/b/m.ko")
    assert (missing.value.errno, conflict.value.errno) == (ENOENT, EEXIST)
    assert r.records == [LibkmodEvent(
        "path_conflict", "kmod_module 'm' already exists with different path: "
        "new-path='/b/m.ko' old-path='/a/m.ko'\n")]


def test_builtin_is_asked_of_the_index_once_and_no_index_means_not_builtin() -> None:
    indexes = FakeIndexes(builtin={"b"})
    r = resolver(indexes)
    b, n = r.new_from_name("b"), r.new_from_name("n")
    assert (r.is_builtin(b), r.is_builtin(b), r.is_builtin(n)) == (True, True, False)
    assert indexes.asked == [("builtin", "b"), ("builtin", "n")]
    no_index = resolver(FakeIndexes(builtin=None))
    assert no_index.is_builtin(no_index.new_from_name("b")) is False


# -- what the configuration says about a module --------------------------------------------

def test_options_for_the_name_and_for_the_alias_are_joined_in_line_order() -> None:
    config = Config(options=(("a:1", "x=1"), ("m", "y=2"), ("a:2", "no=1"), ("m", "z=3"),
                             ("other", "no=2")))
    r = resolver(FakeIndexes(alias={"a:1": ["m"]}), config)
    (m,) = r.lookup("a:1")
    assert r.options(m) == "x=1 y=2 z=3"
    assert r.options(r.new_from_name("m")) == "y=2 z=3"
    assert r.options(r.new_from_name("none")) is None


@pytest.mark.parametrize(("installs", "expected"), [
    ((("m*", "wild"), ("mod", "plain")), "wild"),
    ((("mod", "plain"), ("m*", "wild")), "plain"),
    ((("x*", "no"), ("m[o]d", "bracket"), ("mod", "plain")), "bracket"),
    ((("mod", "first"), ("mod", "second")), "first"),
    ((("x", "no"),), None),
])
def test_the_first_install_or_remove_line_whose_pattern_matches_is_the_command(
        installs: tuple[tuple[str, str], ...], expected: str | None) -> None:
    r = resolver(None, Config(installs=installs, removes=installs))
    assert r.install_command(r.new_from_name("mod")) == expected
    assert r.remove_command(r.new_from_name("mod")) == expected


def test_only_the_first_softdep_line_matching_counts_and_each_name_is_looked_up() -> None:
    config = Config(softdeps=(Softdep("m*", ("p-1", "gone"), ("q",)),
                              Softdep("mod", ("never",), ())))
    r = resolver(FakeIndexes(dep={"p_1": "p-1.ko:", "q": "q.ko:"}), config)
    pre, post = r.softdeps(r.new_from_name("mod"))
    assert (names(pre), names(post)) == ([("p_1", None)], [("q", None)])
    assert r.records == []
    assert r.softdeps(r.new_from_name("x")) == ([], [])


def test_a_softdep_that_cannot_be_looked_up_is_logged_and_skipped() -> None:
    r = resolver(FakeIndexes(dep={"q": "q.ko:"}), Config(softdeps=(Softdep("m", ("b]",),
                                                                           ("q",)),)))
    pre, post = r.softdeps(r.new_from_name("m"))
    assert (pre, names(post)) == ([], [("q", None)])
    assert r.records == [LibkmodEvent(
        "softdep_lookup", "failed to lookup soft dependency 'b]', continuing anyway.\n")]


def test_blacklist_names_modules_not_aliases() -> None:
    r = resolver(FakeIndexes(alias={"a:1": ["m"]}), Config(blacklists=("m", "a:1", "n*")))
    (m,) = r.lookup("a:1")
    assert (r.is_blacklisted(m), r.is_blacklisted(r.new_from_name("n1")),
            r.is_blacklisted(r.new_from_name("M"))) == (True, False, False)


# -- against the real modprobe -------------------------------------------------------------

ORACLE_CONFIG = ("alias kmodd-cfg kmodd_dev\n"
                 "alias kmodd_cf? kmodd_other\n"
                 "alias kmodd_bus kmodd_other\n"
                 "install kmodd_cmd /bin/true\n"
                 "remove kmodd_rm /bin/true\n"
                 "install kmodd_core /bin/true\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = make_tree(tmp_path_factory.mktemp("resolve"))
    tree_config(base, ORACLE_CONFIG)
    return base


@pytest.mark.parametrize(("key", "found"), [
    ("kmodd-cfg", ["kmodd_dev", "kmodd_other"]),
    ("kmodd_bus", ["kmodd_other"]),
    ("kmodd-dev", ["kmodd_dev"]),
    ("kmodd_core", ["kmodd_core"]),
    ("symbol:bus_sym", ["kmodd_bus"]),
    ("kmodd_cmd", ["kmodd_cmd"]),
    ("kmodd_rm", ["kmodd_rm"]),
    ("kmodd:shared", ["kmodd_dev", "kmodd_other"]),
    ("kmodd:dev-1", ["kmodd_dev"]),
    ("kmodd_rtc", ["kmodd_rtc"]),
    ("platform:rtc_cmos", ["kmodd_rtc"]),
    ("nothing", []),
])
@needs_mount_namespace
def test_lookup_finds_what_the_real_modprobe_resolves(tree: Path, key: str,
                                                      found: list[str]) -> None:
    r = tree_resolver(tree, tree_config(tree, ORACLE_CONFIG))
    real = modprobe(tree, "-R", key)
    assert [m.name for m in r.lookup(key)] == real.stdout.split() == found
