"""`kmodctl --help`, `kmodctl COMMAND --help` and `kmodctl help COMMAND`: from the command
table, without a daemon."""

from __future__ import annotations

import io

import pytest

from kmodd.cli.client import COMMANDS, EXIT_USAGE, command_help
from kmodd.cli.kmodctl import dispatch
from kmodd.system.root import Root


def kmodctl(*args: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    code = dispatch(["kmodctl", *args], root=Root(), stdout=out, stderr=err,
                    environ={"KMODD_SOCKET": "/nonexistent"})
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_help_lists_every_command_with_its_one_line_summary_in_table_order() -> None:
    code, out, err = kmodctl("--help")
    assert (code, err) == (0, "")
    listed = out.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert listed == [f"  {name:<14}  {c.summary}" for name, c in COMMANDS.items()]
    assert out.startswith("usage: kmodctl [--json] [--socket PATH] COMMAND [ARGS]\n"
                          "       kmodctl COMMAND --help\n")


def test_help_alone_is_the_same_as_dash_dash_help() -> None:
    assert kmodctl("help") == kmodctl("--help") == kmodctl("-h")


def test_every_command_has_a_summary_line_and_a_sentence_of_description() -> None:
    for name, command in COMMANDS.items():
        assert command.usage.split()[0] == name
        assert command.summary and "\n" not in command.summary and len(command.summary) < 60
        assert command.description.endswith(".")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_and_help_command_print_the_usage_line_and_the_description(
        name: str) -> None:
    text = command_help(name)
    assert kmodctl(name, "--help") == (0, text, "")
    assert kmodctl("help", name) == (0, text, "")
    assert kmodctl("--help", name) == (0, text, "")
    assert text.startswith(f"usage: kmodctl {COMMANDS[name].usage}\n\n")
    body = text.split("\n\n")[1]
    assert " ".join(body.split()) == COMMANDS[name].description
    assert all(len(line) <= 79 for line in text.splitlines())


def test_explain_help_reads_like_a_manual_entry() -> None:
    assert kmodctl("explain", "--help")[1] == (
        "usage: kmodctl explain [--try] MODULE|ALIAS|PATH [OPTIONS]\n"
        "\n"
        "Explain in plain words why a module, an alias or a module file does not load\n"
        "(or that nothing stands in its way), with the evidence, and what the daemon saw\n"
        "of it. When no daemon runs, kmodctl computes the same explanation itself and\n"
        "says so. Exits 1 when a problem was found.\n"
        "\n"
        "options:\n"
        "  --try\n"
        "      Load the module here, as modprobe would, with the module OPTIONS that\n"
        "      follow, and explain that attempt: the errno, its cause and the kernel's\n"
        "      log lines.\n"
    )


def test_plot_help_names_its_by_device_and_output_options() -> None:
    out = kmodctl("help", "plot")[1]
    assert out.startswith("usage: kmodctl plot [--by-device] [-o FILE]\n")
    assert out.endswith("options:\n  --by-device\n"
                        "      Draw one row per device instead, from when its uevent was queued "
                        "to when\n      its last load ended.\n"
                        "  -o, --output FILE\n"
                        "      Write to FILE instead of standard output.\n")


def test_help_for_an_unknown_command_is_a_usage_error() -> None:
    assert kmodctl("help", "frob") == (
        EXIT_USAGE, "", "kmodctl: unknown command 'frob'; see kmodctl --help\n")
    assert kmodctl("frob", "--help") == (
        EXIT_USAGE, "", "kmodctl: unknown command 'frob'; see kmodctl --help\n")
