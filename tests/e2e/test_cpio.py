"""The initramfs writer produces archives GNU cpio reads back exactly."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.vm import cpio

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    with open(archive, "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], stdin=f,
                       cwd=dest, check=True)


def test_tree_round_trips_with_files_links_dirs_and_modes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "usr/bin/tool").chmod(0o755)
    (src / "odd").write_bytes(bytes(range(7)))  # length not a multiple of 4
    (src / "empty").write_bytes(b"")
    (src / "bin").symlink_to("usr/bin")
    os.link(src / "odd", src / "odd-hardlink")
    with open(tmp_path / "a.cpio", "wb") as f:
        w = cpio.Writer(f)
        w.add_tree(str(src))
        w.close()
    assert (tmp_path / "a.cpio").stat().st_size % cpio.SEGMENT_ALIGN == 0
    _extract(tmp_path / "a.cpio", tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((out / "usr/bin/tool").stat().st_mode) == 0o755
    assert (out / "odd").read_bytes() == (out / "odd-hardlink").read_bytes() == bytes(range(7))
    assert (out / "empty").read_bytes() == b""
    assert os.readlink(out / "bin") == "usr/bin"


def test_concatenated_parts_are_aligned_and_end_in_the_zero_guard(tmp_path: Path) -> None:
    cpio.write_entries(str(tmp_path / "a.cpio"), [cpio.Entry("a", stat.S_IFREG | 0o644, b"A")])
    cpio.write_entries(str(tmp_path / "b.cpio"), [
        cpio.Entry("vm", stat.S_IFDIR | 0o755), cpio.Entry("vm/b", stat.S_IFREG | 0o600, b"BB")])
    cpio.concatenate(str(tmp_path / "initrd"), [str(tmp_path / "a.cpio"), str(tmp_path / "b.cpio")])
    data = (tmp_path / "initrd").read_bytes()
    second = data.index(cpio.MAGIC, (tmp_path / "a.cpio").stat().st_size)
    assert second % cpio.SEGMENT_ALIGN == 0
    assert data.endswith(b"\0" * cpio.TAIL_GUARD)
    # GNU cpio reads the first archive only; the second one starts where the first was padded
    _extract(tmp_path / "initrd", tmp_path / "out")
    assert (tmp_path / "out/a").read_bytes() == b"A"
    (tmp_path / "rest").write_bytes(data[second:])
    _extract(tmp_path / "rest", tmp_path / "out2")
    assert (tmp_path / "out2/vm/b").read_bytes() == b"BB"
