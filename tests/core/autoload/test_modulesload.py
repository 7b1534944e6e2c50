"""core.autoload.modulesload: the static lists of modules to load at boot, with the rules of
systemd-modules-load (modules-load.d(5), systemd-modules-load.service(8)) and Debian's
/etc/modules (modules(5))."""

from __future__ import annotations

from kmodd.core.autoload.modulesload import (
    CMDLINE_SOURCE,
    MODULES_LOAD_DIRS,
    Choice,
    Entry,
    Listed,
    ListFile,
    ModuleToLoad,
    Overridden,
    choose_files,
    cmdline_modules,
    collect,
    parse_debian_modules,
    parse_list,
)

ETC, RUN, LOCAL, USR = (
    "/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d")


def names(modules: list[ModuleToLoad]) -> list[str]:
    return [m.module for m in modules]


# -- directories and files ----------------------------------------------------------------------

def test_the_directories_are_systemds_in_precedence_order() -> None:
    assert MODULES_LOAD_DIRS[:4] == (ETC, RUN, LOCAL, USR)


def test_a_name_in_an_earlier_directory_overrides_the_same_name_later() -> None:
    choice = choose_files([(ETC, [Entry("vendor.conf")]), (RUN, [Entry("vendor.conf")]),
                           (USR, [Entry("vendor.conf")])])
    assert choice.files == (ListFile(f"{ETC}/vendor.conf"),)
    assert choice.overridden == (Overridden(f"{RUN}/vendor.conf", f"{ETC}/vendor.conf"),
                                 Overridden(f"{USR}/vendor.conf", f"{ETC}/vendor.conf"))


def test_run_overrides_usr_local_and_usr() -> None:
    choice = choose_files([(RUN, [Entry("a.conf")]), (LOCAL, [Entry("a.conf")]),
                           (USR, [Entry("a.conf")])])
    assert [f.path for f in choice.files] == [f"{RUN}/a.conf"]


def test_files_are_read_in_the_order_of_their_names_whatever_their_directory() -> None:
    choice = choose_files([(ETC, [Entry("50-b.conf")]), (RUN, [Entry("90-c.conf")]),
                           (USR, [Entry("10-a.conf"), Entry("50-b.conf")])])
    assert [f.path for f in choice.files] == [
        f"{USR}/10-a.conf", f"{ETC}/50-b.conf", f"{RUN}/90-c.conf"]


def test_names_are_sorted_as_strcmp_does_uppercase_before_lowercase() -> None:
    choice = choose_files([(ETC, [Entry("b.conf"), Entry("B.conf"), Entry("a.conf")])])
    assert [f.path for f in choice.files] == [f"{ETC}/B.conf", f"{ETC}/a.conf",
                                              f"{ETC}/b.conf"]


def test_only_dot_conf_files_are_read_and_hidden_files_never() -> None:
    choice = choose_files([(ETC, [Entry("a.conf"), Entry("a.conf~"), Entry("README"),
                                  Entry(".hidden.conf"), Entry("b.conf.dpkg-old")])])
    assert [f.path for f in choice.files] == [f"{ETC}/a.conf"]


def test_a_dev_null_link_in_etc_masks_the_vendor_file() -> None:
    choice = choose_files([(ETC, [Entry("vendor.conf", masked=True, target="/dev/null")]),
                           (USR, [Entry("vendor.conf")])])
    texts = {f"{USR}/vendor.conf": "loop\n"}
    assert collect("", choice, texts) == []
    assert choice.overridden == (Overridden(f"{USR}/vendor.conf", f"{ETC}/vendor.conf"),)


def test_an_empty_file_in_etc_masks_the_vendor_file_too() -> None:
    choice = choose_files([(ETC, [Entry("vendor.conf", masked=True)]),
                           (USR, [Entry("vendor.conf")])])
    assert collect("", choice, {f"{USR}/vendor.conf": "loop\n"}) == []


def test_a_file_that_could_not_be_read_names_nothing_and_the_others_still_count() -> None:
    choice = choose_files([(ETC, [Entry("a.conf"), Entry("b.conf")])])
    modules = collect("", choice, {f"{ETC}/a.conf": None, f"{ETC}/b.conf": "loop\n"})
    assert names(modules) == ["loop"]


# -- the format ---------------------------------------------------------------------------------

def test_hash_and_semicolon_lines_are_comments_blank_lines_skipped_whitespace_trimmed() -> None:
    text = "# a comment\n; another\n\n   \n  loop  \n\tdummy\n  # indented comment\n"
    assert parse_list("/etc/modules-load.d/x.conf", text) == [
        Listed("loop", "/etc/modules-load.d/x.conf", 5),
        Listed("dummy", "/etc/modules-load.d/x.conf", 6)]


def test_a_modules_load_d_line_is_one_name_as_systemd_looks_it_up_whole() -> None:
    # systemd passes the stripped line to kmod_module_new_from_lookup: no arguments there.
    assert parse_list("/x.conf", "loop max_loop=8\n") == [Listed("loop max_loop=8", "/x.conf", 1)]


def test_a_comment_after_a_name_is_part_of_the_name_as_in_systemd() -> None:
    assert parse_list("/x.conf", "loop # for images\n")[0].module == "loop # for images"


def test_the_place_of_a_listed_module_is_its_file_and_line() -> None:
    assert Listed("loop", "/etc/modules-load.d/foo.conf", 3).where == \
        "/etc/modules-load.d/foo.conf:3"
    assert Listed("loop", CMDLINE_SOURCE).where == "the kernel command line (modules_load=)"


# -- the kernel command line --------------------------------------------------------------------

def test_modules_load_takes_a_comma_separated_list_and_occurrences_add_up() -> None:
    listed = cmdline_modules("root=/dev/sda1 modules_load=loop,dummy quiet modules_load=vfat")
    assert [x.module for x in listed] == ["loop", "dummy", "vfat"]
    assert {x.source for x in listed} == {CMDLINE_SOURCE}


def test_modules_load_with_a_dash_is_the_same_key() -> None:
    assert [x.module for x in cmdline_modules("modules-load=loop")] == ["loop"]


def test_rd_modules_load_belongs_to_the_initrd_and_is_ignored() -> None:
    assert cmdline_modules("rd.modules_load=loop rd.modules-load=dummy") == []


def test_a_key_without_value_or_empty_items_name_nothing() -> None:
    assert cmdline_modules("modules_load modules_load= modules_load=,loop,,") == [
        Listed("loop", CMDLINE_SOURCE)]


def test_quotes_on_the_command_line_group_and_vanish() -> None:
    assert [x.module for x in cmdline_modules('modules_load="loop,dummy" x="a b"')] == [
        "loop", "dummy"]


def test_other_keys_ending_in_modules_load_are_not_it() -> None:
    assert cmdline_modules("foo.modules_load=loop xmodules_load=dummy") == []


# -- order and duplicates -----------------------------------------------------------------------

def test_the_command_line_comes_first_then_the_files() -> None:
    choice = choose_files([(ETC, [Entry("a.conf")])])
    modules = collect("modules_load=dummy", choice, {f"{ETC}/a.conf": "loop\n"})
    assert names(modules) == ["dummy", "loop"]


def test_a_module_named_twice_is_loaded_once_at_its_first_place_and_both_are_kept() -> None:
    choice = choose_files([(ETC, [Entry("a.conf"), Entry("b.conf")])])
    modules = collect("modules_load=snd-dummy", choice,
                      {f"{ETC}/a.conf": "loop\nsnd_dummy\n", f"{ETC}/b.conf": "\nloop\n"})
    assert modules == [
        ModuleToLoad("snd-dummy", Listed("snd-dummy", CMDLINE_SOURCE),
                     (Listed("snd_dummy", f"{ETC}/a.conf", 2),)),
        ModuleToLoad("loop", Listed("loop", f"{ETC}/a.conf", 1),
                     (Listed("loop", f"{ETC}/b.conf", 2),)),
    ]


# -- Debian's /etc/modules ----------------------------------------------------------------------

def test_etc_modules_lines_carry_arguments_after_the_name() -> None:
    text = "# /etc/modules: kernel modules to load at boot time.\nloop max_loop=8  part=1\nlp\n"
    assert parse_debian_modules("/etc/modules", text) == [
        Listed("loop", "/etc/modules", 2, "max_loop=8 part=1"),
        Listed("lp", "/etc/modules", 3)]


def test_etc_modules_is_read_once_through_debians_modules_conf_link_with_its_format() -> None:
    # kmod's /etc/modules-load.d/modules.conf -> ../modules: one file, read in its place.
    choice = choose_files([(ETC, [Entry("00-first.conf"),
                                  Entry("modules.conf", target="/etc/modules"),
                                  Entry("zz-last.conf")])])
    texts = {f"{ETC}/00-first.conf": "dummy\n", f"{ETC}/modules.conf": "loop max_loop=8\n",
             f"{ETC}/zz-last.conf": "vfat\n"}
    modules = collect("", choice, texts)
    assert names(modules) == ["dummy", "loop", "vfat"]
    assert modules[1].first == Listed("loop", "/etc/modules", 1, "max_loop=8")


def test_etc_modules_masked_by_a_dev_null_link_is_not_read() -> None:
    choice = choose_files([(ETC, [Entry("modules.conf", masked=True, target="/dev/null")])])
    assert collect("", choice, {}) == []


def test_without_the_link_etc_modules_is_not_read_as_on_debian_with_systemd() -> None:
    choice = Choice((), ())
    assert collect("", choice, {"/etc/modules": "loop\n"}) == []
