"""core.kmod.config: modprobe.d lines and the kernel command line read as kmod 30 reads them.

The real `modprobe -c` (on a tree of the test's own, with the test's /proc/cmdline) is the
reference for what each line means; the Diagnostics are held to libkmod's messages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kmodd.core.kmod.config import (
    CMDLINE_ORIGIN,
    Config,
    ConfigFile,
    Diagnostic,
    Origin,
    Softdep,
    build_config,
    parse_config_text,
    parse_kernel_cmdline,
    parse_softdep_text,
)
from tests.core.kmod.realkmod import (
    CONF,
    config_part,
    libkmod_messages,
    make_tree,
    modprobe,
    show_config,
    tree_config,
)
from tests.toolrun import needs_mount_namespace

F = "/etc/modprobe.d/x.conf"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("config"))


def test_each_directive_becomes_its_entry_with_dashes_in_keys_made_underscores() -> None:
    text = (b"alias pci:v[0-9]*-x snd-foo\n"
            b"options snd-foo index=-1\tmodel=a-b\n"
            b"install snd-foo /sbin/modprobe --ignore-install snd-foo\n"
            b"remove snd-foo /bin/true\n"
            b"softdep snd-foo pre: a-b post: c\n"
            b"blacklist snd-bar\n")
    config = parse_config_text(text, F)
    assert config.aliases == (("pci:v[0-9]*_x", "snd_foo"),)
    assert config.options == (("snd_foo", "index=-1 model=a-b"),)
    assert config.installs == (("snd_foo", "/sbin/modprobe --ignore-install snd-foo"),)
    assert config.removes == (("snd_foo", "/bin/true"),)
    assert config.softdeps == (
        Softdep("snd_foo", ("a-b",), ("c",), ((True, "a-b"), (False, "c"))),)
    assert config.blacklists == ("snd_bar",)
    assert config.diagnostics == ()


def test_a_backslash_newline_joins_lines_and_the_origin_is_the_first_physical_line() -> None:
    text = b"# a comment\n\noptions m \\\n  a=1 \\\n  b=2\nblacklist n\n"
    config = parse_config_text(text, F)
    assert config.options == (("m", "  a=1   b=2"),)
    assert config.option_origins == (Origin(F, 3),)
    assert config.blacklist_origins == (Origin(F, 6),)


def test_comments_and_blank_lines_give_nothing() -> None:
    assert parse_config_text(b"# alias a b\n\n   \n\t\n#options m x=1\n", F) == Config()


@pytest.mark.parametrize("line", [
    b"alias onlyone", b"alias", b"blacklist", b"options m", b"options m ", b"install m",
    b"remove m", b"softdep m", b"alias a]b m", b"blacklist a[b", b"weakdep m pre: x",
    b"Alias a b",
])
def test_a_bad_line_is_a_diagnostic_naming_the_file_and_line_and_no_entry(line: bytes) -> None:
    config = parse_config_text(b"# one\n" + line + b"\n", F)
    word = line.split()[0].decode()
    assert config.diagnostics == (
        Diagnostic(f"{F} line 2: ignoring bad line starting with '{word}'"),)
    assert config._replace(diagnostics=()) == Config()


def test_a_bad_joined_line_is_named_by_its_last_physical_line() -> None:
    config = parse_config_text(b"alias x\\\ny\n", F)
    assert config.diagnostics == (Diagnostic(f"{F} line 2: ignoring bad line starting with "
                                             "'alias'"),)


@pytest.mark.parametrize("word", ["include", "config"])
def test_include_and_config_are_reported_as_deprecated(word: str) -> None:
    config = parse_config_text(f"{word} /etc/other.conf\n".encode(), F)
    assert config.diagnostics == (
        Diagnostic(f"{F}: command {word} is deprecated and not parsed anymore",
                   "config_deprecated"),)


@needs_mount_namespace
def test_every_directive_reads_as_the_real_modprobe_shows_it(tree: Path) -> None:
    conf = ("alias  a-b\tc-d\n"
            "alias pci:v[0-9]-* snd-x\n"
            "options m  x=1\tb=2\n"
            "options a \\\n  b=1\n"
            "options k-k trailing \n"
            "install i-x /bin/true $CMDLINE_OPTS\n"
            "remove r-x /bin/false  two  spaces\n"
            "softdep s-1 pre: p1 p2 post: q1\n"
            "softdep s2 post: q1 pre: p1 post: q2\n"
            "softdep s3 ignored pre: p1\n"
            "softdep s4  pre: p1\n"
            "softdep s5 pre:p1 post: q\n"
            "blacklist bl-x\n"
            "blacklist bl-x\n"
            "# blacklist no\n")
    ours = tree_config(tree, conf)
    real = modprobe(tree, "-c")
    assert (real.returncode, libkmod_messages(real.stderr)) == (0, [])
    assert config_part(real.stdout) == show_config(ours)
    # Interleaved sections: each list is the stretch from its first word to its last.
    assert ours.softdeps[1].text() == "pre: p1post: q1 p1 q2"


@needs_mount_namespace
def test_bad_lines_give_the_messages_the_real_modprobe_gives(tree: Path) -> None:
    conf = ("alias onlyone\nfoo bar\noptions a \\\n  b=1\nalias x\\\ny\nblacklist\n"
            "include /x\n")
    ours = tree_config(tree, conf)
    real = modprobe(tree, "-c")
    assert [d.message for d in ours.diagnostics] == libkmod_messages(real.stderr)
    assert ours.diagnostics[0].message == (
        f"{tree}/{CONF} line 1: ignoring bad line starting with 'alias'")


@pytest.mark.parametrize("conf", [
    "options m a=1\r\nalias x y\r\n",
    "blacklist m\x0b\nalias a\x0cb c\n",
    "options m \xe9t\xe9=1\nalias a\\ b c\noptions m a=\\\\x\n",
    "options m a=1\\",
    "options m x\n\\",
    "alias a\0b c\noptions m a=1\0 b=2\n",
    "#x\\\noptions m a=1\n  options m b=2 #not a comment\n",
])
@needs_mount_namespace
def test_odd_bytes_read_as_the_real_modprobe_reads_them(tree: Path, conf: str) -> None:
    ours = tree_config(tree, conf)
    real = modprobe(tree, "-c")
    assert config_part(real.stdout) == show_config(ours)
    assert [d.message for d in ours.diagnostics] == libkmod_messages(real.stderr)


@pytest.mark.parametrize(("text", "pre", "post"), [
    ("pre: a b post: c", ("a", "b"), ("c",)),
    ("post: c pre: a", ("a",), ("c",)),
    ("pre: a post: b pre: c", ("a", "c"), ("b",)),
    ("x y pre: a", ("a",), ()),
    ("pre:a post: b", (), ("b",)),
    ("xpre: a post:", (), ()),
    ("pre: a\tb\n", ("a", "b"), ()),
    (" pre: a", (), ()),
    ("", (), ()),
])
def test_softdep_text_splits_into_pre_and_post(text: str, pre: tuple[str, ...],
                                               post: tuple[str, ...]) -> None:
    assert parse_softdep_text(text) == (pre, post)


@pytest.mark.parametrize(("cmdline", "options", "blacklists"), [
    (b"mod.p=1", [("mod", "p=1")], []),
    (b"snd-hda.model=a-b other.flag", [("snd_hda", "model=a-b"), ("other", "flag")], []),
    (b"modprobe.blacklist=a-b,c", [], ["a-b", "c"]),
    (b"modprobe.blacklist=a modprobe.blacklist=b", [], ["a", "b"]),
    (b'u.v="w z"', [("u", 'v="w z"')], []),
    (b'"q.r=s t"', [("q", 'r="s t"')], []),
    (b"root=/dev/sda quiet x=y.z a.b.c=1 .p=1", [("", "p=1")], []),
    (b"m.p=1\0n.q=2", [("m", "p=1")], []),
    (b"m.p=1\n", [("m", "p=1")], []),
    (b"", [], []),
])
def test_the_kernel_command_line_gives_options_and_blacklists(
        cmdline: bytes, options: list[tuple[str, str]], blacklists: list[str]) -> None:
    assert parse_kernel_cmdline(cmdline) == (options, blacklists, [])


def test_a_bad_module_name_on_the_kernel_command_line_is_a_diagnostic() -> None:
    assert parse_kernel_cmdline(b"bad]x.p=1 ok.p=2") == (
        [("ok", "p=2")], [],
        [Diagnostic("Ignoring bad option on kernel command line while parsing module name: "
                    "'bad]x'", "config_kcmdline")])


@pytest.mark.parametrize(("cmdline", "shown"), [
    ("p,-x,a,b[p.v=1", "p,_x,a,b[p"),
    ("a-b]-c.p=1", "a_b]-c"),
    ("-a[-b.p=1", "_a[-b"),
])
@needs_mount_namespace
def test_a_bad_module_name_is_shown_with_the_dashes_before_the_fault_already_underscores(
        tree: Path, cmdline: str, shown: str) -> None:
    """kmod's underscores() works in place and stops at the fault: the message shows the
    name half converted."""
    message = f"Ignoring bad option on kernel command line while parsing module name: '{shown}'"
    real = modprobe(tree, "-c", cmdline=cmdline)
    assert libkmod_messages(real.stderr) == [message]
    ours = tree_config(tree, "", cmdline)
    assert [d.message for d in ours.diagnostics] == [message]


def test_the_kernel_command_line_is_read_up_to_4095_bytes() -> None:
    line = b"a" * 4088 + b" m.p=12345"
    assert parse_kernel_cmdline(line) == ([("m", "p=12")], [], [])


@needs_mount_namespace
def test_the_kernel_command_line_reads_as_the_real_modprobe_reads_it(tree: Path) -> None:
    cmdline = ('BOOT_IMAGE=/vmlinuz root=UUID=1 ro quiet x.y=1 modprobe.blacklist=a-b,c '
               '"q.r=s t" u.v="w z" snd-hda.model=a-b m.flag bad]x.p=1 a.b.c=1 k.p=1=2')
    ours = tree_config(tree, "options x z=2\n", cmdline)
    real = modprobe(tree, "-c", cmdline=cmdline)
    assert config_part(real.stdout) == show_config(ours)
    assert [d.message for d in ours.diagnostics] == libkmod_messages(real.stderr)
    assert ours.options[0] == ("x", "z=2")
    assert ours.option_origins[1:] == (CMDLINE_ORIGIN,) * (len(ours.options) - 1)


def test_files_are_read_in_order_and_the_command_line_comes_last() -> None:
    config = build_config([(ConfigFile("a.conf", "/a.conf"), b"options m from=a\n"),
                           (ConfigFile("gone.conf", "/gone.conf"), None),
                           (ConfigFile("b.conf", "/b.conf"), b"options m from=b\n")],
                          b"m.from=cmdline")
    assert config.options == (("m", "from=a"), ("m", "from=b"), ("m", "from=cmdline"))
    assert config.files == ("/a.conf", "/b.conf")
    assert config.option_origins == (Origin("/a.conf", 1), Origin("/b.conf", 1), CMDLINE_ORIGIN)


def test_a_blacklists_source_is_the_first_line_that_says_it_or_the_command_line() -> None:
    config = build_config([(ConfigFile("a.conf", "/etc/modprobe.d/a.conf"),
                            b"# x\noptions snd index=1\n"),
                           (ConfigFile("b.conf", "/etc/modprobe.d/b.conf"),
                            b"install x /bin/true\n blacklist pcspkr\nblacklist snd-pcm\n")],
                          b"modprobe.blacklist=snd")
    assert config.blacklist_source("pcspkr") == "/etc/modprobe.d/b.conf:2"
    assert config.blacklist_source("snd_pcm") == "/etc/modprobe.d/b.conf:3"
    assert config.blacklist_source("snd") == "the kernel command line (modprobe.blacklist=)"
