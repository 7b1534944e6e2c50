"""The pure parts of `kmodctl explain`: the value, its text and JSON, and the parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.explain.model import (
    Check,
    Evidence,
    Explanation,
    ExplanationFormatError,
    Finding,
    Verdict,
    from_json,
    render_text,
    to_json,
)
from kmodd.core.kmod.config import CMDLINE_ORIGIN, Origin, build_config, parse_config_text
from kmodd.core.kmod.kernelview import (
    kernel_cmdline_blacklist,
    parse_kallsyms,
    parse_kernel_config,
    parse_lockdown,
    parse_module_symvers,
    parse_proc_keys,
)
from kmodd.core.kmod.params import check_value, split_args

text = st.text(max_size=20)
evidence = st.builds(Evidence, text, text, st.none() | text, st.none() | st.integers(0, 999),
                     st.none() | st.integers(0, 1 << 20))
finding = st.builds(Finding, st.sampled_from(Check), st.sampled_from(Verdict), text,
                    st.none() | text, st.lists(evidence, max_size=3).map(tuple),
                    st.none() | text)
explanation = st.builds(Explanation, text, text, text, st.lists(text, max_size=3).map(tuple),
                        st.lists(finding, max_size=4).map(tuple))


@given(explanation)
def test_json_form_round_trips(expl):
    assert from_json(to_json(expl)) == expl


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d.pop("target"), "explanation.target: missing or of the wrong type"),
    (lambda d: d["findings"][0].update(verdict="fatal"),
     "explanation.findings[0].verdict: unknown value 'fatal'"),
    (lambda d: d["findings"][0]["evidence"][0].update(line="3"),
     "explanation.findings[0].evidence[0].line: missing or of the wrong type"),
    (lambda d: d["findings"][0]["evidence"][0].update(line=True),
     "explanation.findings[0].evidence[0].line: missing or of the wrong type"),
    (lambda d: d.update(modules=[1]), "explanation.modules: expected strings"),
])
def test_a_malformed_json_explanation_names_the_field(damage, message):
    data = to_json(Explanation("x", "6.1", "/lib/modules/6.1", ("x",), (
        Finding(Check.BLACKLIST, Verdict.PROBLEM, "s", "x",
                (Evidence("line", "blacklist x", "/etc/modprobe.d/a.conf", 3),)),)))
    damage(data)
    with pytest.raises(ExplanationFormatError) as err:
        from_json(data)
    assert str(err.value) == message


def test_text_form_puts_each_finding_with_its_evidence_and_fix():
    expl = Explanation("platform:pcspkr", "6.1.0-56-amd64", "/lib/modules/6.1.0-56-amd64",
                       ("pcspkr",), (
        Finding(Check.TARGET, Verdict.INFO, "the alias resolves to 1 module(s): pcspkr"),
        Finding(Check.BLACKLIST, Verdict.PROBLEM, "blacklisted", "pcspkr",
                (Evidence("line", "blacklist pcspkr", "/etc/modprobe.d/b.conf", 3),
                 Evidence("file", "bad magic", "/x.ko", None, 0)), "remove the line"),
        Finding(Check.STATE, Verdict.INFO, "not loaded", "pcspkr")))
    assert render_text(expl) == (
        "platform:pcspkr (pcspkr): 1 problem, 0 warnings (kernel 6.1.0-56-amd64, "
        "/lib/modules/6.1.0-56-amd64)\n"
        "\n"
        "[info] target: the alias resolves to 1 module(s): pcspkr\n"
        "[problem] blacklist: pcspkr: blacklisted\n"
        "    line: blacklist pcspkr (/etc/modprobe.d/b.conf:3)\n"
        "    file: bad magic (/x.ko at offset 0x0)\n"
        "    fix: remove the line\n"
        "[info] state: pcspkr: not loaded\n")
    assert expl.verdict is Verdict.PROBLEM


def test_info_alone_is_an_ok_verdict():
    assert Explanation("x", "r", "d", (), (Finding(Check.STATE, Verdict.INFO, "s"),)).verdict \
        is Verdict.OK


# --- config origins -----------------------------------------------------------------------

def test_every_entry_knows_the_first_line_of_its_logical_line():
    config = parse_config_text(
        b"# comment\nalias a b\n\nblacklist \\\n  c\noptions d e=1\ninstall f /bin/false\n"
        b"remove g true\nsoftdep h pre: i\nbogus line\n", "/etc/modprobe.d/t.conf")
    at = [o.line for o in (*config.alias_origins, *config.blacklist_origins,
                           *config.option_origins, *config.install_origins,
                           *config.remove_origins, *config.softdep_origins)]
    assert at == [2, 4, 6, 7, 8, 9]
    assert {o.file for o in config.alias_origins} == {"/etc/modprobe.d/t.conf"}


def test_command_line_entries_come_from_proc_cmdline():
    config = build_config([], b"modprobe.blacklist=a,b snd.index=1\n")
    assert config.blacklist_origins == (CMDLINE_ORIGIN, CMDLINE_ORIGIN)
    assert config.option_origins == (CMDLINE_ORIGIN,)
    assert str(CMDLINE_ORIGIN) == "/proc/cmdline" and str(Origin("/a", 3)) == "/a:3"


@given(st.binary(max_size=300))
def test_origins_run_beside_their_entries_for_any_file(data):
    config = parse_config_text(data, "/f.conf")
    for entries, origins in ((config.aliases, config.alias_origins),
                             (config.blacklists, config.blacklist_origins),
                             (config.options, config.option_origins),
                             (config.installs, config.install_origins),
                             (config.removes, config.remove_origins),
                             (config.softdeps, config.softdep_origins)):
        assert len(entries) == len(origins)
        lines = data.count(b"\n") + 1
        assert all(1 <= o.line <= lines for o in origins)


# --- kernel views ---------------------------------------------------------------------------

def test_kallsyms_exports_come_from_ksymtab_entries_with_their_owner():
    view = parse_kallsyms(
        "ffffffff81000000 T printk\n"
        "ffffffff81000010 t static_fn\n"
        "ffffffff82000000 r __ksymtab_printk\n"
        "ffffffffc0000000 t fat_fn\t[fat]\n"
        "ffffffffc0100000 r __ksymtab_fat_fn\t[fat]\n"
        "garbage\n")
    assert (dict(view.exports), view.precise, view.lines) == (
        {"printk": "vmlinux", "fat_fn": "fat"}, True, 5)


def test_kallsyms_without_export_marks_counts_global_symbols():
    view = parse_kallsyms("0000000000000000 T printk\n0000000000000000 t local_fn\n"
                          "0000000000000000 D fat_table\t[fat]\n")
    assert (dict(view.exports), view.precise) == ({"printk": "vmlinux", "fat_table": "fat"},
                                                  False)


def test_proc_keys_gives_asymmetric_keys_and_keyrings():
    keys = parse_proc_keys(
        "0d8b1f4c I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 2\n"
        "2a000000 I------     1 perm 1f030000     0     0 asymmetri Debian Secure Boot CA: "
        "6CCECE7E4C6C0D1F6149F3DD27DFCC5CBB419EA1: X509.rsa bb419ea1 []\n"
        "2a000001 I------     1 perm 1f030000     0     0 asymmetri odd\n")
    assert [(k.name, k.key_id, k.line) for k in keys.keys] == [
        ("Debian Secure Boot CA", "6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1", 2)]
    assert keys.keyrings == (".builtin_trusted_keys",)


@pytest.mark.parametrize(("text", "mode"), [
    ("[none] integrity confidentiality\n", "none"),
    ("none [integrity] confidentiality\n", "integrity"), ("", None)])
def test_lockdown_mode_is_the_bracketed_word(text, mode):
    assert parse_lockdown(text) == mode


@pytest.mark.parametrize(("cmdline", "names"), [
    ("root=/dev/sda1 module_blacklist=a,b quiet", ("a", "b")),
    ("module_blacklist=a module-blacklist=c", ("c",)),  # the last one wins
    ('"module_blacklist=x,y" ro', ("x", "y")),
    ("modprobe.blacklist=a", ()),  # kmod's, not the kernel's
    ("module_blacklist", ()),
])
def test_module_blacklist_is_read_as_the_kernel_reads_its_command_line(cmdline, names):
    assert kernel_cmdline_blacklist(cmdline) == names


def test_module_symvers_gives_the_crcs_of_one_exporter():
    assert parse_module_symvers(
        "0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"
        "0x00000001\tfat_fn\tfs/fat/fat\tEXPORT_SYMBOL_GPL\t\n"
        "bad line\n0xzz\tx\tvmlinux\n") == {"printk": 0x12345678}


def test_kernel_config_values_and_unset_options():
    assert parse_kernel_config("CONFIG_MODVERSIONS=y\n# CONFIG_MODULE_SIG_FORCE is not set\n"
                               'CONFIG_MODULE_SIG_HASH="sha256"\n') == {
        "CONFIG_MODVERSIONS": "y", "CONFIG_MODULE_SIG_FORCE": "n",
        "CONFIG_MODULE_SIG_HASH": '"sha256"'}


# --- module parameters --------------------------------------------------------------------

def test_options_split_like_the_kernels_next_arg():
    assert split_args(' a=1 b "c=d e" f="g h" -- i=2') == [
        ("a", "1"), ("b", None), ("c", "d e"), ("f", "g h")]


@pytest.mark.parametrize(("ptype", "value", "ok"), [
    ("int", "-5", True), ("int", "0x10", True), ("int", "2147483648", False),
    ("uint", "-1", False), ("byte", "255", True), ("byte", "256", False),
    ("int", None, False), ("int", "1.5", False), ("int", "12\n", True),
    ("bool", None, True), ("bool", "on", True), ("bool", "maybe", False),
    ("invbool", "N", True), ("charp", "anything at all", True), ("charp", None, True),
    ("array of int", "1,2,3", True), ("array of int", "1,x", False),
    ("array of int", None, False), ("hexint", "0xff", True),
])
def test_values_are_checked_as_the_kernel_parses_them(ptype, value, ok):
    assert (check_value(ptype, value) is None) is ok
