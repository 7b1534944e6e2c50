"""Property tests against the oracle: generated bad and odd input, kmodd must answer as kmod does.

Hypothesis writes modprobe.d files (every command, stray brackets, backslashes, continuations,
tabs, comments, `pre:`/`post:` in odd places), kernel command lines (dots, quotes, `=`,
`modprobe.blacklist=`) and lookup keys (modalias characters, wildcards, brackets, dashes);
each example runs through the real kmod (one namespace for the whole module; the fake root's
files are rewritten in place, which the bind mounts show at once) and through kmodd's front
end, and the bytes must agree. This covers the config parser, the normalisers and the index
(trie) lookups from the outside. Examples are derandomised so CI runs are reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .compare import report
from .kmodd_side import run_inprocess
from .kmodrun import Case, KmodRunner, Result, run_depmod, write_tree
from .suites import Tree

pytestmark = pytest.mark.oracle
needs_kmodd = pytest.mark.usefixtures("kmodd_front_end")

KVER = "4.4.4"
PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow])
#: Keys looked up after each generated config: real modules, spellings, aliases, misses.
LOOKUPS = ("mod-a", "mod_b", "m1", "pci:v00001234d00000001", "unix", "nope")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory,
               kmod_runner: Callable[[], KmodRunner]) -> Iterator[tuple[str, KmodRunner]]:
    """A tiny tree (mod-a needs mod-b, aliases, a builtin) with a writable config file."""
    from tests import kobuild

    root = str(tmp_path_factory.mktemp("properties"))
    moddir = os.path.join(root, "lib/modules", KVER)
    write_tree(root, {
        "proc/cmdline": "", "sys/module/": "", "etc/modprobe.d/h.conf": "",
        f"lib/modules/{KVER}/modules.builtin": "kernel/net/unix/unix.ko\n",
        f"lib/modules/{KVER}/modules.order": "kernel/mod-b.ko\nkernel/mod-a.ko\nkernel/m-c.ko\n",
    })
    os.makedirs(os.path.join(moddir, "kernel"))
    kobuild.write_ko(os.path.join(moddir, "kernel/mod-b.ko"), kobuild.KoSpec(
        "mod_b", modinfo=["license=GPL", "alias=pci:v00001234d*"], exports=["fb"]))
    kobuild.write_ko(os.path.join(moddir, "kernel/mod-a.ko"), kobuild.KoSpec(
        "mod_a", modinfo=["license=GPL", "alias=m[0-9]", "softdep=pre: m-c"], needs=["fb"]))
    kobuild.write_ko(os.path.join(moddir, "kernel/m-c.ko"), kobuild.KoSpec(
        "m_c", modinfo=["license=GPL", "alias=pci:v*d00000001"]))
    runner = kmod_runner()
    run_depmod(root, KVER, runner=runner)
    runner.use_root(root)
    yield root, runner


def _write_in_place(path: str, data: bytes) -> None:
    # Same inode: the namespace's bind mount of the directory (or file) sees the new bytes.
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.truncate(0)
        f.write(data)


def _compare(root: str, runner: KmodRunner, cases: list[Case], what: str) -> None:
    runner.ensure_root(root)
    expected = runner.run(cases)
    actual = [run_inprocess(c, root) for c in cases]
    problem = report(what, cases, expected, actual)
    if problem:
        pytest.fail(problem, pytrace=False)


# --- strategies -----------------------------------------------------------------------------

TOKEN_ALPHABET = "ab-_*?[]!^.:01\\#=\"'"
tokens = st.one_of(
    st.sampled_from(["mod-a", "mod_a", "mod-b", "m-c", "m*", "m[0-9]", "mod-[ab]", "mod_?",
                     "nope", "unix", "pre:", "post:", "pre:mod-b", "x=1", "$CMDLINE_OPTS",
                     "pci:v00001234d*", "/bin/true", "a]b", "a[b", "[]", "\\", "#"]),
    st.text(alphabet=TOKEN_ALPHABET, min_size=1, max_size=6))
separators = st.sampled_from([" ", "  ", "\t", " \t", "\\\n", " \\\n "])
commands = st.sampled_from(["alias", "options", "install", "remove", "softdep", "blacklist",
                            "weakdep", "include", "config", "Alias", "#", "bogus", ""])


@st.composite
def config_lines(draw: st.DrawFn) -> str:
    lead = draw(st.sampled_from(["", "", " ", "\t"]))
    parts = [draw(commands), *draw(st.lists(tokens, max_size=5))]
    text = lead + parts[0]
    for part in parts[1:]:
        text += draw(separators) + part
    return text + draw(st.sampled_from(["", "", " ", "  ", "\t", "\\"]))


config_files = st.lists(config_lines(), min_size=1, max_size=8).map("\n".join).flatmap(
    lambda body: st.sampled_from([body, body + "\n", body + "\\"]))

cmdline_tokens = st.one_of(
    st.sampled_from(["mod_a.x=1", "mod-a.y", "mod_b.z=1.5G", "m.p=\"a b\"", "\"mod_a.q=r s\"",
                     "modprobe.blacklist=mod-a,mod_b", "modprobe.blacklist=", "a.b.c=1",
                     "root=/dev/sda", "quiet", "x[1:2.3]=4", ".p=1", "mod_a.=v", "\"", "\"x\"",
                     "mod_a.\"p\"=1", "mod_a.p=\"unterminated"]),
    st.text(alphabet="abm_-.=\"' 01", min_size=1, max_size=10))
cmdlines = st.lists(cmdline_tokens, max_size=8).map(" ".join).flatmap(
    lambda s: st.sampled_from([s, s + "\n", " " + s]))

lookup_keys = st.one_of(
    st.text(alphabet="abmod-_[]*?!^.:0123456789ABCDEFpciv\\/ ", min_size=1, max_size=12),
    st.tuples(st.sampled_from(["pci:v", "pci:v00001234d", "m", "mod", "mod-", "symbol:", "usb:v"]),
              st.text(alphabet="0123456789ABCDEFdv*?[]-_", max_size=10)).map("".join),
).filter(lambda k: not k.startswith("-"))


# --- properties -----------------------------------------------------------------------------

@needs_kmodd
@PROPERTY_SETTINGS
@given(config=config_files)
def test_any_modprobe_d_file_is_parsed_and_reported_like_kmod(
        small_root: tuple[str, KmodRunner], config: str) -> None:
    root, runner = small_root
    _write_in_place(os.path.join(root, "etc/modprobe.d/h.conf"), config.encode())
    base = ("modprobe", "-S", KVER)
    cases = [Case.of(*base, "-c")]
    cases += [Case.of(*base, "--show-depends", k) for k in LOOKUPS]
    cases += [Case.of(*base, "-R", "m1"), Case.of(*base, "-r", "-n", "-v", "mod-a")]
    _compare(root, runner, cases, f"config {config!r}")


@needs_kmodd
@PROPERTY_SETTINGS
@given(cmdline=cmdlines)
def test_any_kernel_command_line_gives_kmods_options_and_blacklist(
        small_root: tuple[str, KmodRunner], cmdline: str) -> None:
    root, runner = small_root
    _write_in_place(os.path.join(root, "etc/modprobe.d/h.conf"), b"")
    _write_in_place(os.path.join(root, "proc/cmdline"), cmdline.encode())
    try:
        base = ("modprobe", "-S", KVER)
        cases = [Case.of(*base, "-c"), Case.of(*base, "--show-depends", "mod-a"),
                 Case.of(*base, "--show-depends", "m1")]
        _compare(root, runner, cases, f"cmdline {cmdline!r}")
    finally:
        _write_in_place(os.path.join(root, "proc/cmdline"), b"")


@needs_kmodd
@PROPERTY_SETTINGS
@given(key=lookup_keys)
def test_any_lookup_key_resolves_like_kmod_on_the_debian_tree(
        oracle_tree: Tree, kmod_runner: Callable[[], KmodRunner], empty_root: str,
        key: str) -> None:
    runner = kmod_runner()
    base = ("modprobe", "-d", oracle_tree.root, "-S", oracle_tree.kver)
    cases = [Case.of(*base, "-R", key), Case.of(*base, "--show-depends", key)]
    _compare(empty_root, runner, cases, f"key {key!r}")


def test_property_examples_are_not_all_rejected_by_kmod(
        small_root: tuple[str, KmodRunner]) -> None:
    """The generators reach kmod's accepting paths too (a check on the strategies)."""
    root, runner = small_root
    runner.ensure_root(root)
    _write_in_place(os.path.join(root, "etc/modprobe.d/h.conf"),
                    b"alias m* mod-b\noptions mod-a x=1\nsoftdep mod-a post: mod-b\n")
    (got,) = runner.run([Case.of("modprobe", "-S", KVER, "-c")])
    _write_in_place(os.path.join(root, "etc/modprobe.d/h.conf"), b"")
    assert got == Result(0, got.stdout, b"")
    assert got.stdout.startswith(b"alias m* mod_b\noptions mod_a x=1\nsoftdep mod_a post: mod-b\n")
