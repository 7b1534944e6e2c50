"""kmodctl's bash completion: generated from the command table, run in a real bash."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from kmodd.cli.client import COMMANDS, GLOBAL_OPTIONS
from kmodd.cli.completion import completion, main
from kmodd.cli.kmodctl import KMOD_TOOLS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "completion/kmodctl.bash"
MODULES_DEP = """\
kernel/drivers/net/ethernet/intel/e100.ko.xz: kernel/drivers/net/mii.ko.xz
kernel/drivers/net/ethernet/intel/e1000/e1000.ko.xz:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz: kernel/drivers/ptp/ptp.ko.xz
kernel/drivers/net/mii.ko.xz:
kernel/drivers/ptp/ptp.ko.xz:
extra/snd-hda-intel.ko:
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root whose running kernel's modules.dep lists a few Intel NIC drivers."""
    moddir = tmp_path / "lib/modules" / platform.release()
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text(MODULES_DEP)
    return tmp_path


def complete(line: str, root: Path | None = None) -> list[str]:
    """COMPREPLY after typing `line` (a trailing space starts a new, empty word) and TAB."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    code = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
            'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _kmodctl; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    env = {"PATH": os.environ["PATH"], "KMODD_ROOT": str(root or "/nonexistent")}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", code, "bash", str(SCRIPT),
                             *words], capture_output=True, text=True, env=env, timeout=60,
                            cwd=root or "/")
    assert result.stderr == ""
    return [w for w in result.stdout.split("\n") if w]


def test_the_committed_script_is_the_generators_output() -> None:
    """If this fails, regenerate: python3 -m kmodd.cli.completion --write completion/"""
    assert SCRIPT.read_text() == completion()


def test_write_puts_kmodctl_bash_in_the_directory(tmp_path: Path) -> None:
    assert main(["--write", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["kmodctl.bash"]
    assert (tmp_path / "kmodctl.bash").read_text() == completion()


def test_the_script_is_valid_bash_that_registers_kmodctl() -> None:
    result = subprocess.run(["bash", "--norc", "-c", f'source "{SCRIPT}"; complete -p kmodctl'],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "complete -F _kmodctl kmodctl\n", "")


def test_st_completes_to_status() -> None:
    assert complete("kmodctl st") == ["status"]


def test_an_empty_word_offers_every_command_help_and_every_kmod_tool() -> None:
    assert complete("kmodctl ") == [*COMMANDS, "help", *KMOD_TOOLS]


def test_a_dash_offers_the_global_options() -> None:
    assert complete("kmodctl -") == [n for o in GLOBAL_OPTIONS for n in o.names]
    assert complete("kmodctl --j") == ["--json"]


def test_help_completes_command_names() -> None:
    assert complete("kmodctl help ex") == ["explain"]


def test_explain_completes_module_names_from_the_roots_modules_dep(root: Path) -> None:
    assert complete("kmodctl explain e100", root) == ["e100", "e1000", "e1000e"]
    assert complete("kmodctl --json explain e1000", root) == ["e1000", "e1000e"]
    assert complete("kmodctl load snd", root) == ["snd-hda-intel"]
    assert complete("kmodctl modprobe p", root) == ["ptp"]


def test_commands_without_module_operands_complete_no_module_names(root: Path) -> None:
    assert complete("kmodctl status e", root) == []
    assert complete("kmodctl why e", root) == []


def test_a_commands_own_options_come_with_the_global_ones() -> None:
    assert complete("kmodctl load --d") == ["--dry-run"]
    assert complete("kmodctl explain --t") == ["--try"]
    assert complete("kmodctl plot --o") == ["--output"]
    assert complete("kmodctl plot --b") == ["--by-device"]


def test_kmod_tools_options_are_left_to_the_tool() -> None:
    assert complete("kmodctl modprobe --") == []


def test_no_modules_dep_means_no_module_names() -> None:
    assert complete("kmodctl explain e") == []


def test_the_socket_option_completes_a_file_name(root: Path) -> None:
    assert complete("kmodctl --socket li", root) == ["lib"]
    assert complete("kmodctl --socket li st", root) == ["status"]
