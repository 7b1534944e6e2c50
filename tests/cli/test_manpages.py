"""The manual pages: generated from the code's tables, committed in man/, warning-free roff."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import kmodd
from kmodd.cli.client import COMMANDS, EXIT_STATUS, GLOBAL_OPTIONS
from kmodd.cli.kmodctl import KMOD_TOOLS
from kmodd.cli.manpages import Page, main, pages
from kmodd.core.exitcodes import EXIT_STATUS as KMODD_EXIT_STATUS
from kmodd.core.settings import SETTINGS, Kind, format_default

REPO = Path(__file__).resolve().parents[2]
PAGES = {page.filename: page for page in pages()}


def plain(page: Page) -> str:
    """The page as `man` shows it, without formatting, one paragraph per line (no width)."""
    env = {**os.environ, "MANWIDTH": "2000", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    result = subprocess.run(["man", "-l", "-"], input=page.text, capture_output=True,
                            text=True, env=env, timeout=60, check=True)
    return re.sub(r".\x08", "", result.stdout)


needs_man = pytest.mark.skipif(shutil.which("man") is None or shutil.which("groff") is None,
                               reason="man and groff are not installed (apt-get install "
                                      "man-db groff-base)")


def test_there_are_exactly_the_three_pages_an_admin_looks_for() -> None:
    assert sorted(PAGES) == ["kmodctl.8", "kmodd.8", "kmodd.conf.5"]


@pytest.mark.parametrize("filename", sorted(PAGES))
def test_the_committed_page_is_the_generators_output(filename: str) -> None:
    """If this fails, regenerate: python3 -m kmodd.cli.manpages --write man/"""
    assert (REPO / "man" / filename).read_text() == PAGES[filename].text


def test_write_puts_every_page_in_the_directory(tmp_path: Path) -> None:
    assert main(["--write", str(tmp_path / "man")]) == 0
    written = {p.name: p.read_text() for p in (tmp_path / "man").iterdir()}
    assert written == {name: page.text for name, page in PAGES.items()}


@needs_man
@pytest.mark.parametrize("filename", sorted(PAGES))
def test_groff_and_man_format_the_page_without_a_warning(filename: str) -> None:
    groff = subprocess.run(["groff", "-man", "-ww", "-z"], input=PAGES[filename].text,
                           capture_output=True, text=True, timeout=60)
    assert (groff.returncode, groff.stdout, groff.stderr) == (0, "", "")
    man = subprocess.run(["man", "--warnings", "-l", str(REPO / "man" / filename)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"})
    assert (man.returncode, man.stderr) == (0, "")


@pytest.mark.parametrize("filename", sorted(PAGES))
def test_each_page_has_the_standard_header_and_sections_in_order(filename: str) -> None:
    page = PAGES[filename]
    first = page.text.splitlines()[0]
    assert first == (f'.TH {page.name.upper()} {page.section} "" "kmodd {kmodd.__version__}" '
                     f'"{"File Formats" if page.section == 5 else "System Administration"}"')
    sections = re.findall(r"^\.SH (.+)$", page.text, re.MULTILINE)
    expected = {
        "kmodd.8": ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "CONTROL SOCKET",
                    "DEGRADED MODE", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"],
        "kmodctl.8": ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS",
                      "KMOD-COMPATIBLE TOOLS", "EXIT STATUS", "ENVIRONMENT", "FILES",
                      "SEE ALSO"],
        "kmodd.conf.5": ["NAME", "SYNOPSIS", "DESCRIPTION", "VALUES", "OPTIONS", "EXAMPLE",
                         "SEE ALSO"],
    }
    assert sections == expected[filename]


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^([A-Z][A-Z -]+)$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@needs_man
def test_kmodd_8_documents_every_setting_as_an_option_and_a_kernel_parameter() -> None:
    options = _sections(plain(PAGES["kmodd.8"]))["OPTIONS"]
    for s in SETTINGS:
        option = f"--{s.name.replace('_', '-')}"
        tag = (f"{option}, --no-{option[2:]}, {option}=BOOL" if s.kind is Kind.BOOL
               else f"{option}=")
        assert f"\n       {tag}" in options, s.name
        assert f"On the kernel command line: kmodd.{s.name}=" in options
        assert f"Default: {format_default(s)}." in options
    assert "\n       --receive-buffer=SIZE\n              Kernel uevent socket receive buffer " \
           "(SO_RCVBUFFORCE, else SO_RCVBUF). Default: 128M. From 4K to 2047M.\n" in options


@needs_man
def test_kmodd_8_lists_the_exit_codes_and_the_signals() -> None:
    shown = _sections(plain(PAGES["kmodd.8"]))
    codes = re.findall(r"^       (\d)  +(.+)$", shown["EXIT STATUS"], re.MULTILINE)
    assert codes == [(str(c), m) for c, m in KMODD_EXIT_STATUS.items()]
    assert [c for c, _ in codes] == ["0", "1", "2", "3"]
    assert shown["SIGNALS"].startswith("\n       SIGHUP Reload: ")
    assert "\n       SIGTERM, SIGINT\n              Stop: " in shown["SIGNALS"]


@needs_man
def test_kmodctl_8_documents_every_command_option_tool_and_exit_code() -> None:
    shown = _sections(plain(PAGES["kmodctl.8"]))
    for command in COMMANDS.values():
        # A tag shorter than the indent shares its line with the description.
        entry = (rf"\n       {re.escape(command.usage)}(\n {{14}}| +)"
                 rf"{re.escape(command.description)}\n")
        assert re.search(entry, shown["COMMANDS"]), command.usage
        for option in command.options:
            assert f"{', '.join(option.names)}" in shown["COMMANDS"]
    for option in GLOBAL_OPTIONS:
        assert f"       {', '.join(option.names)}" in shown["OPTIONS"]
    for name, tool in KMOD_TOOLS.items():
        assert f"{tool.summary[:1].upper()}{tool.summary[1:]}, as {name}(8)." in \
            shown["KMOD-COMPATIBLE TOOLS"]
    codes = re.findall(r"^       (\d)  +(.+)$", shown["EXIT STATUS"], re.MULTILINE)
    assert codes == [(str(c), m) for c, m in EXIT_STATUS.items()]


@needs_man
def test_kmodd_conf_5_documents_every_setting_with_its_default() -> None:
    options = _sections(plain(PAGES["kmodd.conf.5"]))["OPTIONS"]
    tags = re.findall(r"^       (\w+) = ([A-Z]+)$", options, re.MULTILINE)
    assert [name for name, _ in tags] == [s.name for s in SETTINGS]
    for s in SETTINGS:
        description = s.description[:1].upper() + s.description[1:]
        assert f"{description.replace('`', '')}. Default: {format_default(s)}." in options


def test_format_default_writes_what_etc_kmodd_conf_lists() -> None:
    text = (REPO / "etc/kmodd.conf").read_text()
    listed = dict(re.findall(r"^#(\w+) = ?(.*)$", text, re.MULTILINE))
    assert listed == {s.name: format_default(s).replace('""', "") for s in SETTINGS}
