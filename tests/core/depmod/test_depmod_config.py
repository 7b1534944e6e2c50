"""kmodd.core.depmod.config: depmod.d files, and which copy of a module wins."""

from __future__ import annotations

import pytest

from kmodd.core.depmod.config import (
    ConfigCandidate,
    DepmodConfig,
    FoundModule,
    Message,
    Search,
    SearchType,
    config_path_candidate,
    kernel_matches,
    new_is_not_better,
    order_config_files,
    parse_config,
    should_exclude_dir,
)
from kmodd.core.priority import Priority

DIRNAME = "/lib/modules/4.4.4"


def test_config_files_merge_by_name_sorted_with_earlier_directories_winning() -> None:
    listed = [
        ConfigCandidate("/etc/depmod.d", "b.conf"),
        ConfigCandidate("/etc/depmod.d", ".hidden.conf"),
        ConfigCandidate("/etc/depmod.d", "notes.txt"),
        ConfigCandidate("/etc/depmod.d", "sub.conf", is_dir=True),
        ConfigCandidate("/lib/depmod.d", "a.conf"),
        ConfigCandidate("/lib/depmod.d", "b.conf"),
        ConfigCandidate("/lib/depmod.d", "conf"),
        config_path_candidate("/srv/extra"),
    ]
    files, messages = order_config_files(listed)
    assert files == ["/lib/depmod.d/a.conf", "/etc/depmod.d/b.conf", "/srv/extra"]
    assert messages == [
        Message(Priority.INFO, "All cfg files need .conf: /etc/depmod.d/notes.txt\n"),
        Message(Priority.ERR,
                "Directories inside directories are not supported: /etc/depmod.d/sub.conf\n"),
        Message(Priority.INFO, "All cfg files need .conf: /lib/depmod.d/conf\n"),
    ]


def test_commands_are_stored_newest_first_as_kmod_keeps_them() -> None:
    cfg = parse_config([("/c/a.conf", b"search updates built-in\nsearch extra external\n"
                                      b"override mod-a 4.4.4 special\n"
                                      b"external * /opt/ext1\nexternal 4\\.4.* /opt/ext2\n"
                                      b"exclude dbg tmp\n")], "4.4.4")
    assert cfg.searches == (Search(SearchType.EXTERNAL), Search(SearchType.PATH, "extra"),
                            Search(SearchType.BUILTIN), Search(SearchType.PATH, "updates"))
    assert cfg.overrides == ("special/mod-a",)
    assert cfg.externals == ("/opt/ext2", "/opt/ext1")
    assert cfg.excludes == ("tmp", "dbg")


def test_no_search_line_means_updates_only() -> None:
    assert parse_config([], "6.1.0").searches == (Search(SearchType.PATH, "updates"),)


def test_bad_and_unimplemented_lines_are_reported_with_file_and_line() -> None:
    cfg = parse_config([("/c/x.conf", b"# comment\n\n  # indented\noverride a b\n"
                                      b"include y.conf\nmake_map_files\nexternal 9.9 /x\n")],
                       "4.4.4")
    assert cfg.messages == (
        Message(Priority.ERR, "/c/x.conf:3: ignoring bad line starting with '#'\n"),
        Message(Priority.ERR, "/c/x.conf:4: ignoring bad line starting with 'override'\n"),
        Message(Priority.INFO, "/c/x.conf:5: command include not implemented yet\n"),
        Message(Priority.INFO, "/c/x.conf:6: command make_map_files not implemented yet\n"),
        Message(Priority.INFO, "/c/x.conf:7: external directory did not match 9.9\n"),
    )


@pytest.mark.parametrize(("pattern", "version", "matches"), [
    ("*", "anything", True),
    ("4.4.4", "4.4.4", True),
    ("4\\.4\\..*", "4.4.4-rc1", True),
    ("^5", "4.4.4", False),
    ("[[:digit:]]+\\.[[:digit:]]+", "6.1.0-56-amd64", True),
    ("(", "4.4.4", False),  # does not compile: no match
])
def test_kernel_versions_are_posix_extended_regexes(pattern: str, version: str,
                                                    matches: bool) -> None:
    assert kernel_matches(pattern, version) is matches


def test_excluded_names_include_build_and_source() -> None:
    cfg = DepmodConfig("4.4.4", excludes=("debug",))
    assert [n for n in (".", "..", "build", "source", "debug", "kernel")
            if should_exclude_dir(cfg, n)] == [".", "..", "build", "source", "debug"]


def _found(rel: str, base: str = DIRNAME) -> FoundModule:
    path = f"{base}/{rel}"
    name = path.rsplit("/", 1)[1]
    return FoundModule(path, path, path.rfind("/") + 1, name.split(".")[0].replace("-", "_"))


def _keeps_old(cfg_text: bytes, old: str, new: str) -> bool:
    cfg = parse_config([("/c.conf", cfg_text)], "4.4.4")
    return new_is_not_better(cfg, DIRNAME, _found(old), _found(new))


@pytest.mark.parametrize(("config", "old", "new", "kept"), [
    (b"", "kernel/a/m.ko", "updates/m.ko", "updates/m.ko"),
    (b"", "updates/m.ko", "kernel/a/m.ko", "updates/m.ko"),
    (b"", "kernel/a/m.ko", "kernel/b/m.ko", "kernel/a/m.ko"),  # tie: the first found stays
    (b"search foo built-in", "foobar/m.ko", "foo/m.ko", "foo/m.ko"),
    (b"search foobar foo built-in", "foo/m.ko", "foobar/m.ko", "foobar/m.ko"),
    (b"search built-in updates", "kernel/m.ko", "updates/m.ko", "kernel/m.ko"),
    (b"override m 4.4.4 special\nsearch updates", "updates/m.ko", "special/m.ko.xz",
     "special/m.ko.xz"),
    (b"override m 4.4.4 special", "special/m.ko", "updates/m.ko", "special/m.ko"),
])
def test_which_copy_of_a_module_wins(config: bytes, old: str, new: str, kept: str) -> None:
    assert _keeps_old(config, old, new) is (kept == old)


def test_external_directories_take_the_place_of_the_external_keyword() -> None:
    cfg = parse_config([("/c.conf", b"search external updates built-in\n"
                                    b"external * /opt/ext\n")], "4.4.4")
    ext = _found("m.ko", base="/opt/ext")
    assert new_is_not_better(cfg, DIRNAME, _found("updates/m.ko"), ext) is False
    assert new_is_not_better(cfg, DIRNAME, ext, _found("updates/m.ko")) is True
