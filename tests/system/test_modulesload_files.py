"""system.modulesload: reading modules-load.d, the kernel command line and /etc/modules from a
root (the rules themselves: tests/core/autoload/test_modulesload.py)."""

from __future__ import annotations

import os
from pathlib import Path

from kmodd.core.autoload.modulesload import Listed, ListFile, Overridden
from kmodd.system.modulesload import read_lists
from kmodd.system.root import Root


def tree(base: Path, files: dict[str, str], cmdline: str = "") -> Root:
    for rel, text in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    (base / "proc").mkdir(exist_ok=True)
    (base / "proc/cmdline").write_text(cmdline + "\n")
    return Root(str(base))


def test_an_empty_file_and_a_dev_null_link_in_etc_mask_the_vendor_lists(tmp_path: Path) -> None:
    root = tree(tmp_path, {"etc/modules-load.d/a.conf": "",
                           "usr/lib/modules-load.d/a.conf": "loop\n",
                           "usr/lib/modules-load.d/b.conf": "dummy\n",
                           "usr/local/lib/modules-load.d/c.conf": "vfat\n"})
    os.symlink("/dev/null", tmp_path / "etc/modules-load.d/b.conf")
    lists = read_lists(root)
    assert [m.module for m in lists.modules] == ["vfat"]
    assert lists.choice.files == (
        ListFile("/etc/modules-load.d/a.conf", masked=True),
        ListFile("/etc/modules-load.d/b.conf", masked=True, target="/dev/null"),
        ListFile("/usr/local/lib/modules-load.d/c.conf"))
    assert lists.choice.overridden == (
        Overridden("/usr/lib/modules-load.d/a.conf", "/etc/modules-load.d/a.conf"),
        Overridden("/usr/lib/modules-load.d/b.conf", "/etc/modules-load.d/b.conf"))
    assert lists.problems == ()


def test_the_command_line_comes_before_the_files(tmp_path: Path) -> None:
    root = tree(tmp_path, {"run/modules-load.d/x.conf": "loop\n"},
                cmdline="quiet modules_load=dummy rd.modules_load=vfat")
    assert [m.first.where for m in read_lists(root).modules] == [
        "the kernel command line (modules_load=)", "/run/modules-load.d/x.conf:1"]


def test_a_file_that_is_not_regular_is_said_and_skipped_and_the_rest_still_read(
        tmp_path: Path) -> None:
    root = tree(tmp_path, {"etc/modules-load.d/b.conf": "loop\n"})
    os.mkfifo(tmp_path / "etc/modules-load.d/a.conf")
    (tmp_path / "etc/modules-load.d/dir.conf").mkdir()
    lists = read_lists(root)
    assert [m.module for m in lists.modules] == ["loop"]
    assert lists.problems == ("/etc/modules-load.d/a.conf: is a FIFO, ignoring",)


def test_etc_modules_is_read_through_debians_link_with_its_arguments(tmp_path: Path) -> None:
    root = tree(tmp_path, {"etc/modules": "# kernel modules\nloop max_loop=8\n",
                           "etc/modules-load.d/zz.conf": "loop\n"})
    os.symlink("../modules", tmp_path / "etc/modules-load.d/modules.conf")
    (module,) = read_lists(root).modules
    assert module.places == (Listed("loop", "/etc/modules", 2, "max_loop=8"),
                             Listed("loop", "/etc/modules-load.d/zz.conf", 1))
