"""system.inotify: real file changes in modprobe.d and the module directory, debounced."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from kmodd.system.inotify import INDEX_FILES, Change, ChangeWatcher, config_targets
from kmodd.system.root import Root

# Short enough for a fast test, long enough that a 2-core machine under load keeps a burst
# together.
DEBOUNCE = 0.15


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Root, Path]:
    (tmp_path / "etc" / "modprobe.d").mkdir(parents=True)
    (tmp_path / "lib" / "modprobe.d").mkdir(parents=True)
    (tmp_path / "usr" / "local" / "lib").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    moddir = tmp_path / "lib" / "modules" / "6.1.0-test"
    moddir.mkdir(parents=True)
    return Root(str(tmp_path)), moddir


def _watcher(root: Root, moddir: Path, max_delay: float = 5.0) -> ChangeWatcher:
    return ChangeWatcher(config_targets(root, str(moddir)), DEBOUNCE, max_delay)


async def _next(watcher: ChangeWatcher, timeout: float = 5.0) -> Change:
    return await asyncio.wait_for(watcher.wait_change(), timeout)


async def _no_change(watcher: ChangeWatcher, wait: float = 3 * DEBOUNCE) -> bool:
    try:
        await asyncio.wait_for(watcher.wait_change(), wait)
    except TimeoutError:
        return True
    return False


def test_writing_a_conf_file_is_one_change(tree: tuple[Root, Path]) -> None:
    root, moddir = tree

    async def scenario() -> Change:
        watcher = _watcher(root, moddir)
        conf = Path(root.etc("modprobe.d", "blacklist.conf"))
        conf.write_text("blacklist pcspkr\n")
        with conf.open("a") as f:  # a second write in the same burst
            f.write("blacklist snd_pcsp\n")
        change = await _next(watcher)
        watcher.close()
        return change

    change = asyncio.run(scenario())
    assert change == Change(frozenset({root.etc("modprobe.d", "blacklist.conf")}))


def test_only_conf_files_and_index_files_count(tree: tuple[Root, Path]) -> None:
    root, moddir = tree

    async def scenario() -> tuple[bool, Change]:
        watcher = _watcher(root, moddir)
        Path(root.etc("modprobe.d", "notes.txt")).write_text("x")
        Path(root.etc("modprobe.d", ".swap.conf")).write_text("x")
        (moddir / "modules.dep").write_text("x")  # the text index is not what kmodd reads
        quiet = await _no_change(watcher)
        # depmod writes a temporary file and renames it over the index
        (moddir / "modules.alias.bin.tmp").write_bytes(b"\xb0\x07\xf4\x57")
        os.rename(moddir / "modules.alias.bin.tmp", moddir / "modules.alias.bin")
        change = await _next(watcher)
        watcher.close()
        return quiet, change

    quiet, change = asyncio.run(scenario())
    assert quiet is True
    assert change == Change(frozenset({str(moddir / "modules.alias.bin")}))
    assert "modules.dep.bin" in INDEX_FILES


def test_removing_and_renaming_conf_files_are_changes(tree: tuple[Root, Path]) -> None:
    root, moddir = tree
    first = Path(root.path("/lib/modprobe.d/a.conf"))
    first.write_text("options a x=1\n")

    async def scenario() -> list[Change]:
        watcher = _watcher(root, moddir)
        first.unlink()
        removed = await _next(watcher)
        Path(root.etc("modprobe.d", "b.conf.new")).write_text("y")
        os.rename(root.etc("modprobe.d", "b.conf.new"), root.etc("modprobe.d", "b.conf"))
        renamed = await _next(watcher)
        watcher.close()
        return [removed, renamed]

    removed, renamed = asyncio.run(scenario())
    assert removed.paths == {str(first)}
    assert renamed.paths == {root.etc("modprobe.d", "b.conf")}


def test_a_modprobe_d_directory_created_later_is_watched_from_then_on(
    tree: tuple[Root, Path],
) -> None:
    root, moddir = tree

    async def scenario() -> tuple[tuple[str, ...], Change, Change]:
        watcher = _watcher(root, moddir)
        before = watcher.watched_directories
        os.mkdir(root.run("modprobe.d"))
        Path(root.run("modprobe.d", "x.conf")).write_text("softdep a pre: b\n")
        appeared = await _next(watcher)
        Path(root.run("modprobe.d", "x.conf")).write_text("softdep a pre: c\n")
        edited = await _next(watcher)
        watcher.close()
        return before, appeared, edited

    before, appeared, edited = asyncio.run(scenario())
    assert root.run("modprobe.d") not in before
    assert appeared.paths == {root.run("modprobe.d"), root.run("modprobe.d", "x.conf")}
    assert edited.paths == {root.run("modprobe.d", "x.conf")}


def test_a_removed_module_directory_is_a_change_and_is_watched_again(
    tree: tuple[Root, Path],
) -> None:
    root, moddir = tree

    async def scenario() -> tuple[Change, Change]:
        watcher = _watcher(root, moddir)
        shutil.rmtree(moddir)
        gone = await _next(watcher)
        moddir.mkdir()
        (moddir / "modules.dep.bin").write_bytes(b"x")
        back = await _next(watcher)
        watcher.close()
        return gone, back

    gone, back = asyncio.run(scenario())
    assert gone.paths == {str(moddir)}
    assert back.paths == {str(moddir), str(moddir / "modules.dep.bin")}


def test_a_busy_directory_is_reported_after_max_delay(tree: tuple[Root, Path]) -> None:
    root, moddir = tree

    async def scenario() -> tuple[Change, int]:
        watcher = _watcher(root, moddir, max_delay=4 * DEBOUNCE)
        conf = Path(root.etc("modprobe.d", "busy.conf"))
        writes = 0

        async def keep_writing() -> None:
            nonlocal writes
            while True:
                conf.write_text(f"# {writes}\n")
                writes += 1
                await asyncio.sleep(DEBOUNCE / 3)

        writer = asyncio.create_task(keep_writing())
        change = await _next(watcher, timeout=10 * DEBOUNCE)
        writer.cancel()
        watcher.close()
        return change, writes

    change, writes = asyncio.run(scenario())
    assert change.paths == {root.etc("modprobe.d", "busy.conf")}
    assert writes >= 2  # the writer never paused for a debounce period
