"""core.settings: one table, four sources in precedence order, bad values reported and ignored."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.settings import (
    SETTINGS,
    Diagnostic,
    defaults,
    parse_argv,
    parse_config,
    parse_kernel_cmdline,
    resolve,
    setting_names,
    usage,
)


def test_the_settings_value_has_one_attribute_per_table_row_in_order() -> None:
    assert setting_names() == tuple(s.name for s in SETTINGS)


def test_every_default_passes_its_own_validation() -> None:
    from kmodd.core.settings import format_size, parse_value

    for s in SETTINGS:
        text = format_size(s.default) if s.kind == "size" and isinstance(s.default, int) else (
            ("yes" if s.default else "no") if isinstance(s.default, bool) else str(s.default)
        )
        if s.kind == "group" and s.default == "":
            continue
        assert parse_value(s, text) == s.default, s.name


def test_defaults_match_the_documented_values() -> None:
    d = defaults()
    assert d.receive_buffer == 128 * 1024 * 1024
    assert d.control_socket == "/run/kmodd/io.kmodd"
    assert d.coldplug is True and d.dry_run is False


def test_a_config_file_sets_values_of_every_kind() -> None:
    text = (
        "# kmodd settings\n"
        "\n"
        "receive-buffer = 64M\n"
        "coldplug=no\n"
        "reload_debounce = 250ms\n"
        'control_socket = "/run/k/s"\n'
        "log_level = DEBUG\n"
        "intake_queue = 100\n"
        "control_group = kmodadmin\n"
        "stop_timeout = 1min\n"
    )
    result = parse_config(text, "/etc/kmodd.conf")
    assert result.diagnostics == ()
    assert result.values == {
        "receive_buffer": 64 * 1024 * 1024,
        "coldplug": False,
        "reload_debounce": 0.25,
        "control_socket": "/run/k/s",
        "log_level": "debug",
        "intake_queue": 100,
        "control_group": "kmodadmin",
        "stop_timeout": 60.0,
    }


def test_bad_config_lines_are_reported_with_file_and_line_and_ignored() -> None:
    text = (
        "receive_buffer = lots\n"
        "no equals sign here\n"
        "frobnicate = 1\n"
        "intake_queue = 3\n"
        "coldplug = maybe\n"
        "control_socket = relative/path\n"
        "log_level = loud\n"
        "parallel_loads = 4\n"
    )
    result = parse_config(text, "/etc/kmodd.conf")
    assert result.values == {"parallel_loads": 4}
    assert [d.text for d in result.diagnostics] == [
        "/etc/kmodd.conf:1: invalid value 'lots' for receive_buffer: expected a size like 128M,"
        " ignoring",
        "/etc/kmodd.conf:2: expected 'name = value', got 'no equals sign here', ignoring",
        "/etc/kmodd.conf:3: unknown setting 'frobnicate', ignoring",
        "/etc/kmodd.conf:4: '3' for intake_queue is below the minimum 16, ignoring",
        "/etc/kmodd.conf:5: invalid value 'maybe' for coldplug: expected yes or no, ignoring",
        "/etc/kmodd.conf:6: invalid value 'relative/path' for control_socket: expected an"
        " absolute path, ignoring",
        "/etc/kmodd.conf:7: invalid value 'loud' for log_level: expected one of emerg, alert,"
        " crit, err, warning, notice, info, debug, ignoring",
    ]


def test_argv_takes_both_option_spellings_and_boolean_negation() -> None:
    argv = parse_argv(["kmodd", "--receive-buffer=1M", "--intake-queue", "64", "--no-coldplug",
                       "--dry-run", "--config", "/tmp/k.conf", "--version"])
    assert argv.settings.values == {
        "receive_buffer": 1024 * 1024, "intake_queue": 64, "coldplug": False, "dry_run": True,
    }
    assert argv.settings.diagnostics == ()
    assert (argv.config_file, argv.show_help, argv.show_version) == ("/tmp/k.conf", False, True)


def test_root_and_config_take_a_path_in_either_spelling() -> None:
    argv = parse_argv(["kmodd", "--root=/tmp/r", "--config", "/tmp/r/k.conf"])
    assert (argv.root, argv.config_file, argv.settings.values) == ("/tmp/r", "/tmp/r/k.conf", {})
    missing = parse_argv(["kmodd", "--root"])
    assert missing.root is None
    assert [d.text for d in missing.settings.diagnostics] == [
        "command line: --root needs a path, ignoring"]


def test_bad_argv_is_reported_and_ignored() -> None:
    argv = parse_argv(["kmodd", "--bogus=1", "stray", "--intake-queue=x", "--no-intake-queue",
                       "--stop-timeout"])
    assert argv.settings.values == {}
    assert [d.text for d in argv.settings.diagnostics] == [
        "command line: unknown option --bogus, ignoring",
        "command line: unexpected argument 'stray', ignoring",
        "command line: invalid value 'x' for intake_queue: expected a whole number, ignoring",
        "command line: unknown option --no-intake-queue, ignoring",
        "command line: --stop-timeout needs a value, ignoring",
    ]


def test_the_kernel_command_line_is_split_like_the_kernel_does() -> None:
    cmdline = ('BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet kmodd.coldplug=0 '
               '"kmodd.control_group=wheel" kmodd.dry-run kmodd.log_level="debug" '
               'kmodd.nope=1 kmodd.intake_queue=abc modprobe.blacklist=foo\n')
    result = parse_kernel_cmdline(cmdline)
    assert result.values == {
        "coldplug": False, "control_group": "wheel", "dry_run": True, "log_level": "debug",
    }
    assert result.diagnostics == (
        Diagnostic("kernel command line", None, "unknown setting 'nope'"),
        Diagnostic("kernel command line", None,
                   "invalid value 'abc' for intake_queue: expected a whole number"),
    )


def test_sources_win_in_order_defaults_config_argv_kernel() -> None:
    config = parse_config("intake_queue = 100\nparallel_loads = 2\nstop_timeout = 3s\n")
    argv = parse_argv(["kmodd", "--parallel-loads=4", "--stop-timeout=5"]).settings
    kernel = parse_kernel_cmdline("kmodd.stop_timeout=7")
    result = resolve(config, argv, kernel, config_name="/etc/kmodd.conf")
    assert dataclasses.replace(
        defaults(), intake_queue=100, parallel_loads=4, stop_timeout=7.0
    ) == result.settings
    assert result.origins["intake_queue"] == "/etc/kmodd.conf"
    assert result.origins["parallel_loads"] == "command line"
    assert result.origins["stop_timeout"] == "kernel command line"
    assert result.origins["coldplug"] == "default"


def test_a_bad_value_keeps_the_value_from_the_source_below() -> None:
    config = parse_config("intake_queue = 100\n")
    kernel = parse_kernel_cmdline("kmodd.intake_queue=many")
    result = resolve(config, None, kernel)
    assert result.settings.intake_queue == 100
    assert [d.text for d in result.diagnostics] == [
        "kernel command line: invalid value 'many' for intake_queue: expected a whole number,"
        " ignoring"
    ]


@pytest.mark.parametrize(
    ("text", "seconds"), [("10", 10.0), ("1.5s", 1.5), ("200ms", 0.2), ("2min", 120.0)]
)
def test_durations_take_units(text: str, seconds: float) -> None:
    assert parse_config(f"stop_timeout = {text}").values == {"stop_timeout": seconds}


def test_help_lists_every_setting_with_its_default() -> None:
    text = usage()
    for s in SETTINGS:
        assert f"--{s.name.replace('_', '-')}" in text
    assert "(size, default 128M)" in text


@given(st.text())
def test_any_config_text_gives_values_and_diagnostics_never_an_exception(text: str) -> None:
    result = parse_config(text, "fuzz.conf")
    assert all(d.source == "fuzz.conf" for d in result.diagnostics)


def test_the_autoload_deny_list_is_kept_as_its_aliases_once_each() -> None:
    result = parse_config('autoload_deny = "net-pf-33, fs-cramfs net-pf-33"\n')
    assert (result.values, result.diagnostics) == ({"autoload_deny": "net-pf-33 fs-cramfs"}, ())


def test_a_deny_list_with_a_word_that_is_not_an_alias_is_ignored_whole() -> None:
    result = parse_config("autoload_deny = fs-cramfs net-pf-*\n", "/etc/kmodd.conf")
    assert result.values == {}
    assert [d.text for d in result.diagnostics] == [
        "/etc/kmodd.conf:1: invalid value 'fs-cramfs net-pf-*' for autoload_deny: "
        "'net-pf-*' is not a module alias, ignoring"]
