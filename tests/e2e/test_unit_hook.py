"""The loader hook: a systemd unit's [Service] turned into what systemd would execute."""

from __future__ import annotations

import pytest

from tests.e2e.vm.unit import ServiceCommand, UnitError, parse_env_file, service_command

SAMPLE = """\
# kmodd.service as the project might ship it
[Unit]
Description=Kernel module autoloader
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=notify
Environment=PYTHONUNBUFFERED=1 "KMODD_OPTS=--workers 4 --log-level info"
Environment=KMODD_ROOT=/
ExecStart=/usr/local/bin/kmodd \\
    --root ${KMODD_ROOT} $KMODD_OPTS
Restart=on-failure

[Install]
WantedBy=sysinit.target
"""


def test_sample_unit_gives_argv_environment_and_notify() -> None:
    assert service_command(SAMPLE) == ServiceCommand(
        argv=("/usr/local/bin/kmodd", "--root", "/", "--workers", "4", "--log-level", "info"),
        env={"PYTHONUNBUFFERED": "1", "KMODD_OPTS": "--workers 4 --log-level info",
             "KMODD_ROOT": "/"},
        notify=True, type="notify")


def test_simple_service_without_environment() -> None:
    cmd = service_command("[Service]\nExecStart=/usr/bin/kmodd\n")
    assert (cmd.argv, cmd.env, cmd.notify, cmd.type) == (("/usr/bin/kmodd",), {}, False, "simple")


def test_exec_prefixes_are_dropped_and_percent_percent_is_a_percent() -> None:
    cmd = service_command("[Service]\nExecStart=-+/usr/bin/kmodd --fmt=100%%\n")
    assert cmd.argv == ("/usr/bin/kmodd", "--fmt=100%")


def test_empty_exec_start_resets_an_earlier_one() -> None:
    cmd = service_command("[Service]\nExecStart=/bin/false\nExecStart=\nExecStart=/usr/bin/kmodd\n")
    assert cmd.argv == ("/usr/bin/kmodd",)


def test_later_environment_assignment_wins() -> None:
    cmd = service_command("[Service]\nEnvironment=A=1\nEnvironment=A=2\nExecStart=/x $A\n")
    assert (cmd.argv, cmd.env) == (("/x", "2"), {"A": "2"})


def test_environment_file_is_read_through_the_callback_and_optional_one_may_be_absent() -> None:
    files = {"/etc/default/kmodd": "# defaults\nKMODD_OPTS='--dry-run'\n"}
    unit = ("[Service]\nEnvironmentFile=-/etc/default/missing\n"
            "EnvironmentFile=/etc/default/kmodd\nExecStart=/usr/bin/kmodd $KMODD_OPTS\n")
    cmd = service_command(unit, read_file=files.get)
    assert cmd.argv == ("/usr/bin/kmodd", "--dry-run")


def test_parse_env_file_strips_quotes_and_skips_comments() -> None:
    assert parse_env_file('; c\n# c\nA="x y"\nB=z\n\n') == {"A": "x y", "B": "z"}


@pytest.mark.parametrize(("unit", "message"), [
    ("[Unit]\nDescription=x\n", "kmodd.service: no [Service] section"),
    ("[Service]\nType=notify\n", "kmodd.service: [Service] has no ExecStart="),
    ("[Service]\nExecStart=/a\nExecStart=/b\n", "kmodd.service:3: more than one ExecStart="),
    ("[Service]\nExecStart=/usr/bin/kmodd %i\n", "kmodd.service:2: unit specifiers"),
    ("[Service]\nbogus line\n", "kmodd.service:2: not a KEY=VALUE line"),
    ("[Service]\nEnvironment=NOEQUALS\nExecStart=/a\n", "kmodd.service:2: not an assignment"),
    ("[Service]\nEnvironmentFile=/etc/default/kmodd\nExecStart=/a\n",
     "kmodd.service:2: EnvironmentFile= needs a way to read /etc/default/kmodd"),
    ("[Service]\nExecStart=@/usr/bin/kmodd kmodd\n", "kmodd.service:2: '@'"),
])
def test_units_the_hook_cannot_honour_are_rejected_naming_the_line(unit: str, message: str) -> None:
    with pytest.raises(UnitError) as e:
        service_command(unit)
    assert str(e.value).startswith(message)
