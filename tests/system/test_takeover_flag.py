"""The flag systemd-modules-load.service's drop-in checks (`system.takeover`): what kmodd does
with whatever it finds in the flag's place. A FIFO must never make it wait (for a writer when
reading, for a reader when writing); a link is never followed."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kmodd.core.runpaths import TAKEOVER_FLAG
from kmodd.system.root import Root
from kmodd.system.takeover import (
    LOADED_MARK,
    announce_takeover,
    lists_loaded_this_boot,
    mark_lists_loaded,
)


def returns(call: Callable[[], Any]) -> Any:
    """`call()`'s result; fails the test, instead of hanging it, if the call blocks."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(30)
    assert box, "the call blocked"
    return box[0]


def test_the_flag_is_made_marked_read_and_removed(tmp_path: Path) -> None:
    root = Root(str(tmp_path))
    flag = Path(root.path(TAKEOVER_FLAG))
    assert announce_takeover(root, True) is None
    assert flag.read_bytes() == b"" and not lists_loaded_this_boot(root)
    assert mark_lists_loaded(root) is None
    assert flag.read_bytes() == LOADED_MARK and lists_loaded_this_boot(root)
    assert announce_takeover(root, False) is None
    assert not flag.exists()


def test_a_fifo_in_the_flags_place_is_an_error_and_never_a_wait(tmp_path: Path) -> None:
    root = Root(str(tmp_path))
    flag = root.path(TAKEOVER_FLAG)
    os.makedirs(os.path.dirname(flag))
    os.mkfifo(flag)
    assert returns(lambda: lists_loaded_this_boot(root)) is False
    assert returns(lambda: mark_lists_loaded(root)) == \
        f"{TAKEOVER_FLAG}: No such device or address"
    assert returns(lambda: announce_takeover(root, True)) == \
        f"{TAKEOVER_FLAG}: No such device or address"


def test_a_link_in_the_flags_place_is_not_followed(tmp_path: Path) -> None:
    root = Root(str(tmp_path))
    flag = root.path(TAKEOVER_FLAG)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    os.makedirs(os.path.dirname(flag))
    os.symlink(target, flag)
    assert mark_lists_loaded(root) == f"{TAKEOVER_FLAG}: Too many levels of symbolic links"
    assert announce_takeover(root, True) == \
        f"{TAKEOVER_FLAG}: Too many levels of symbolic links"
    assert target.read_bytes() == b"precious\n"
    assert announce_takeover(root, False) is None  # the link itself goes, not its target
    assert not os.path.lexists(flag) and target.read_bytes() == b"precious\n"
