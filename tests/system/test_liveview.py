"""system.liveview: /sys/module listed once per interval; states read only for listed names."""

from __future__ import annotations

from pathlib import Path

from kmodd.core.kmod.initstate import InitState
from kmodd.system.liveview import ListedModules
from kmodd.system.modstate import SysModules
from kmodd.system.root import Root


def test_listed_names_answer_from_sysfs_and_others_are_not_loaded(tmp_path: Path) -> None:
    (tmp_path / "sys/module/live_one").mkdir(parents=True)
    (tmp_path / "sys/module/live_one/initstate").write_text("live\n")
    view = ListedModules(SysModules(Root(str(tmp_path))), max_age=3600)
    assert view.initstate("live_one") is InitState.LIVE
    assert view.initstate("absent") is None
    # A module that appears after the listing is not seen until the next one...
    (tmp_path / "sys/module/arriving").mkdir()
    assert view.initstate("arriving") is None
    # ...which forget() asks for: a directory without initstate is a module still COMING.
    view.forget()
    assert view.initstate("arriving") is InitState.COMING


def test_without_sys_module_nothing_is_loaded(tmp_path: Path) -> None:
    view = ListedModules(SysModules(Root(str(tmp_path))))
    assert view.initstate("anything") is None
