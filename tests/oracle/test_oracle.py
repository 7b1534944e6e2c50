"""The oracle side alone: the masked runner, the corpus and the quirks tree answer as kmod does.

These tests need no kmodd. The literal expectations were read off the real kmod 30 and checked
by hand against kmod's sources and reference/kmod-semantics.md, so a runner that leaks the
host's configuration, or a quirks file that stops exercising its quirk, fails here.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable

import pytest

from tests.toolrun import needs_mount_namespace

from .corpus import QEMU_FILES, build_corpus, bus_of, read_aliases
from .kmodrun import (
    DEFAULT_PATH,
    RC_TIMEOUT,
    SELFTEST,
    Case,
    KmodRunner,
    Result,
    host_view,
    make_selftest_root,
    run_cases,
    write_tree,
)
from .suites import QUIRKS_ROOT, Suite, Tree

pytestmark = pytest.mark.oracle
Oracle = Callable[[Suite], list[Result]]


@pytest.fixture(scope="module")
def selftest_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    if os.geteuid() != 0:
        pytest.skip("the kmod oracle needs root")
    return make_selftest_root(str(tmp_path_factory.mktemp("selftest")))


@pytest.mark.parametrize("index", range(len(SELFTEST)), ids=[c.label() for c, _ in SELFTEST])
def test_runner_shows_kmod_the_fake_root_instead_of_the_host(selftest_root: str,
                                                             index: int) -> None:
    case, want = SELFTEST[index]
    assert run_cases(selftest_root, [case]) == [want]


def test_runner_leaves_the_host_paths_as_they_were(selftest_root: str) -> None:
    before = host_view()
    with KmodRunner(selftest_root) as kmod:
        kmod.run([Case.of("/bin/true")])
    assert host_view() == before


def test_runner_returns_results_in_case_order_across_batches(selftest_root: str) -> None:
    cases = [Case.of("/bin/sh", "-c", f"echo {i}; echo e{i} >&2; exit {i % 3}")
             for i in range(40)]
    with KmodRunner(selftest_root, workers=4) as kmod:
        first = kmod.run(cases)
        second = kmod.run(cases[::-1])
    assert first == [Result(i % 3, f"{i}\n".encode(), f"e{i}\n".encode()) for i in range(40)]
    assert second == first[::-1]


@needs_mount_namespace
def test_runner_switches_fake_roots_in_one_namespace(tmp_path: pathlib.Path) -> None:
    a, b, c = (str(tmp_path / n) for n in "abc")
    write_tree(a, {"etc/modprobe.d/a.conf": "A\n", "proc/cmdline": "a.x=1\n",
                   "sys/module/mod_a/initstate": "live\n"})
    write_tree(b, {"usr/local/lib/modprobe.d/b.conf": "B\n", "run/modprobe.d/": "",
                   "lib/modprobe.d/b.conf": "-> /dev/null"})
    os.makedirs(c)
    probe = [Case.of("/bin/sh", "-c", "for d in /etc /run /usr/local/lib /lib; do "
                     "if [ -e $d/modprobe.d ]; then ls -A $d/modprobe.d | tr '\\n' ' '; "
                     "else printf 'absent '; fi; echo \"$d\"; done; "
                     "cat /proc/cmdline; ls /sys/module")]
    seen = {}
    with KmodRunner(a) as kmod:
        for name, root in (("a", a), ("b", b), ("a2", a), ("c", c), ("b2", b)):
            kmod.use_root(root)
            (seen[name],) = kmod.run(probe)
    assert seen["a"].stdout == (b"a.conf /etc\nabsent /run\nabsent /usr/local/lib\n"
                                  b"absent /lib\na.x=1\nmod_a\n")
    assert seen["b"].stdout == b"absent /etc\n/run\nb.conf /usr/local/lib\nb.conf /lib\n"
    assert seen["c"].stdout == (b"absent /etc\nabsent /run\nabsent /usr/local/lib\n"
                                b"absent /lib\n")
    assert seen["a2"] == seen["a"] and seen["b2"] == seen["b"]


def test_runner_passes_only_path_and_the_case_environment(selftest_root: str) -> None:
    (got,) = run_cases(selftest_root, [Case.of("/usr/bin/env", env={"KMOD_LOG": "err"})])
    assert got == Result(0, f"PATH={DEFAULT_PATH}\nKMOD_LOG=err\n".encode(), b"")


def test_runner_runs_a_case_in_its_working_directory(selftest_root: str) -> None:
    (got,) = run_cases(selftest_root, [Case.of("/bin/pwd", cwd="/sys/module")])
    assert got == Result(0, b"/sys/module\n", b"")


def test_runner_kills_a_case_that_runs_past_its_timeout(selftest_root: str) -> None:
    with KmodRunner(selftest_root, timeout=0.5) as kmod:
        (got,) = kmod.run([Case.of("/bin/sleep", "30")])
    assert got.rc == RC_TIMEOUT


# --- the bare Debian tree -------------------------------------------------------------------------

def test_bare_root_hides_host_modprobe_d_and_kernel_command_line(oracle_tree: Tree,
                                                                  empty_root: str) -> None:
    (got,) = run_cases(empty_root, [Case.of("modprobe", "-d", oracle_tree.root, "-S",
                                            oracle_tree.kver, "-c")])
    config, _, indexes = got.stdout.partition(
        b"\n# End of configuration files. Dumping indexes now:\n\n")
    assert got.rc == 0 and got.stderr == b""
    # Only the tree's own modules.softdep is configuration; nothing from the host.
    assert config.startswith(b"softdep ext4 pre: crypto-crc32c\n")
    assert all(line.startswith(b"softdep ") for line in config.splitlines())
    assert indexes.startswith(b"alias 9p_fd 9pnet_fd\n")


# --- the quirks tree (see tests/data/modprobe.d-quirks/README.md) ---------------------------

def _quirk(tree: Tree, *args: str) -> Result:
    (got,) = run_cases(QUIRKS_ROOT, [Case.of("modprobe", "-d", tree.root, "-S", tree.kver,
                                             *args)])
    return got


def test_quirks_every_matching_config_alias_counts_in_config_order(oracle_tree: Tree) -> None:
    assert _quirk(oracle_tree, "-R", "quirk-star2").stdout == b"e1000\ne1000e\n"


def test_quirks_options_by_alias_pattern_then_name_then_cmdline_with_trailing_space(
        oracle_tree: Tree) -> None:
    got = _quirk(oracle_tree, "--show-depends", "quirk-opt1")
    assert got.stdout == (b"install /bin/echo first-match $CMDLINE_OPTS by-alias-pattern=1 "
                          b"own=1 second=2 third=3 InterruptThrottleRate=3000,3000 debug=16 \n")


def test_quirks_blacklist_applies_to_a_direct_name_only_with_dash_b(oracle_tree: Tree) -> None:
    mod = oracle_tree.moddir.encode()
    assert _quirk(oracle_tree, "--show-depends", "8139cp").stdout == (
        b"insmod " + mod + b"/kernel/drivers/net/mii.ko \n"
        b"insmod " + mod + b"/kernel/drivers/net/ethernet/realtek/8139cp.ko \n")
    got = _quirk(oracle_tree, "-b", "--show-depends", "8139cp")
    assert (got.rc, got.stdout) == (0, b"")


def test_quirks_removal_stops_when_a_post_softdep_is_in_use(oracle_tree: Tree) -> None:
    got = _quirk(oracle_tree, "-r", "-n", "-v", "8139too")
    assert got.rc == 1 and got.stdout == b""
    assert got.stderr.endswith(b"\nmodprobe: FATAL: Module mii is in use.\n")


def test_quirks_show_config_keeps_every_parser_quirk(oracle_tree: Tree) -> None:
    got = _quirk(oracle_tree, "-c")
    for line in (b"softdep quirk_sd_first* pre: e1000post: e1000e\n",
                 b"softdep usb_storage pre: mii psmouse 8139cppost: psmouse\n",
                 b"options quirk_eof last-line=1\xff\n",
                 b"options quirk_grammar join-a=1         join-b=2\n",
                 b"options quirk_grammar backslash=\\ dq=\"x\" hash=#\n",
                 b"options quirk_grammar tab-a=1 tab-b=2\n",
                 b"options quirk_override from=etc\n",
                 b"options quirk_bytes before-nul=1\n",
                 b"blacklist quirk_crlf\r\n",
                 b"blacklist snd-hda-intel\n",
                 b"options  noname=1\n",
                 b"options parport dyndbg=\"file drivers/parport/ieee1284_ops.c +mpf\"\n",
                 b"alias quirk_old_alias e1000\n",
                 b"install quirk_cont /bin/true   --cont\n"):
        assert line in got.stdout, line
    assert b"should-not-appear" not in got.stdout
    assert b"from=run" not in got.stdout and b"from=lib" not in got.stdout
    order = [line.split()[2] for line in got.stdout.splitlines()
             if line.startswith(b"options quirk_order ")]
    assert order == [b"-dash", b"00-first", b"20-run-only", b"30-local", b"99-last",
                     b"Z-upper", b"_underscore", b"modules.conf", b"modules.zz"]
    assert (b"libkmod: ERROR ../libkmod/libkmod-config.c:712 kmod_config_parse: "
            b"/lib/modprobe.d/95-weakdep.conf line 2: ignoring bad line starting with "
            b"'weakdep'\n") in got.stderr
    assert (b"Directories inside directories are not supported: /etc/modprobe.d/sub.conf\n"
            in got.stderr)


# --- the corpus -----------------------------------------------------------------------------------

def test_corpus_has_5000_strings_covering_every_bus_of_the_tree(oracle_tree: Tree) -> None:
    entries = build_corpus(oracle_tree.moddir)
    assert len(entries) >= 5000
    assert len({e.text for e in entries}) == len(entries)
    corpus_buses = {e.bus for e in entries}
    tree_buses = {bus_of(p) for p, _ in read_aliases(oracle_tree.moddir)}
    assert tree_buses <= corpus_buses
    kinds = {e.kind for e in entries}
    assert {"match", "multi", "miss", "exact", "name", "qemu"} <= kinds


def test_corpus_is_the_same_every_time(oracle_tree: Tree) -> None:
    assert build_corpus(oracle_tree.moddir) == build_corpus(oracle_tree.moddir)


def test_corpus_includes_every_qemu_device_string(oracle_tree: Tree) -> None:
    texts = {e.text for e in build_corpus(oracle_tree.moddir)}
    for path in QEMU_FILES:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                wanted = {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}
            assert wanted <= texts


# --- every suite on the oracle --------------------------------------------------------------------

def test_every_suite_runs_to_completion_on_the_real_kmod(suites: dict[str, Suite],
                                                        oracle: Oracle) -> None:
    for suite in suites.values():
        results = oracle(suite)
        assert len(results) == len(suite.cases)
        assert {r.rc for r in results} <= {0, 1}, suite.name
    # Every module of the tree shows at least its own insmod line (softdeps may add builtins).
    for case, r in zip(suites["show-depends-all"].cases, oracle(suites["show-depends-all"]),
                       strict=True):
        lines = r.stdout.splitlines()
        assert r.rc == 0 and r.stderr == b"" and lines, case.label()
        assert all(ln.startswith((b"insmod /", b"builtin ")) for ln in lines), case.label()


def test_oracle_cache_round_trips_results() -> None:
    from . import cache

    results = [Result(0, b"a\n", b""), Result(1, b"", b"\xff\x00"), Result(-1000, b"", b"")]
    assert cache._decode(cache._encode(results)) == results
    with tempfile.TemporaryDirectory() as d:
        assert cache.path_digest(d) != cache.path_digest(os.path.join(d, "x"))
