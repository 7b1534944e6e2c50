"""core.autoload.udev_static: the table covers every `kmod load` rule in Debian 12's real rules
files."""

from __future__ import annotations

import os
import re

from kmodd.core.autoload.udev_static import RULES_FILES, STATIC_LOADS, StaticLoad, static_loads
from kmodd.core.autoload.uevent import Action, Uevent
from tests.debian_udev import udev_rules_dir

_TOKEN = re.compile(r'\s*([A-Z]+(?:\{[^}]*\})?)\s*(==|!=|\+=|=)\s*"([^"]*)"\s*,?')


def _tokens(line: str) -> list[tuple[str, str, str]]:
    out = []
    pos = 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        assert m, f"cannot read rule at {line[pos:]!r}"
        out.append((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    return out


def _rules_from_file(directory: str, name: str) -> list[StaticLoad]:
    """Each `kmod load` rule of a real rules file, read into the table's shape."""
    rules = []
    add_only_until: str | None = None
    with open(os.path.join(directory, name)) as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            tokens = _tokens(line)
            if tokens == [("ACTION", "!=", "add"), ("GOTO", "=", tokens[-1][2])]:
                add_only_until = tokens[-1][2]
                continue
            if tokens[0][:2] == ("LABEL", "=") and tokens[0][2] == add_only_until:
                add_only_until = None
                continue
            runs = [v for k, op, v in tokens if k == "RUN{builtin}" and v.startswith("kmod load")]
            if not runs:
                continue
            fields: dict[str, object] = {"add_only": add_only_until is not None}
            env = []
            for key, op, value in tokens:
                if key == "RUN{builtin}":
                    continue
                if (key, op) == ("SUBSYSTEM", "=="):
                    fields["subsystem"] = value
                elif (key, op) == ("KERNEL", "=="):
                    fields["kernel"] = value
                elif key == "ENV{MODALIAS}" and (op, value) == ("==", "?*"):
                    fields["needs_modalias"] = True
                elif key.startswith("ENV{") and op == "==":
                    env.append((key[4:-1], value))
                elif key == "TEST" and op == "!=" and re.fullmatch(r"\[module/\w+\]", value):
                    fields["unless_loaded"] = value[len("[module/"):-1]
                else:
                    raise AssertionError(f"{name}:{number}: match {key}{op} not in the table")
            rules.append(StaticLoad(
                f"{name}:{number}", tuple(runs[0].split()[2:]), env=tuple(env), **fields,  # type: ignore[arg-type]
            ))
    return rules


def test_the_table_is_exactly_the_kmod_load_rules_of_debian_udev() -> None:
    directory = udev_rules_dir()
    from_files = [rule for name in RULES_FILES for rule in _rules_from_file(directory, name)]
    assert list(STATIC_LOADS) == from_files


def _event(action: Action, devpath: str, subsystem: str, **env: str) -> Uevent:
    full = {"ACTION": action.value, "DEVPATH": devpath, "SUBSYSTEM": subsystem, "SEQNUM": "1"}
    full.update(env)
    return Uevent(action, devpath, subsystem, 1, full)


def _nothing_loaded(name: str) -> bool:
    return False


def test_a_scsi_device_loads_sg_until_sg_is_loaded_whatever_the_action() -> None:
    dev = "/devices/pci0000:00/host0/target0:0:0/0:0:0:0"
    for action in (Action.ADD, Action.CHANGE, Action.BIND):
        event = _event(action, dev, "scsi", DEVTYPE="scsi_device", MODALIAS="scsi:t-0x00")
        assert static_loads(event, _nothing_loaded) == ("sg",)
        assert static_loads(event, lambda name: name == "sg") == ()
    host = _event(Action.ADD, "/devices/pci0000:00/host0", "scsi", DEVTYPE="scsi_host")
    assert static_loads(host, _nothing_loaded) == ()


def test_parport_pc_appearing_in_the_module_subsystem_loads_ppdev_on_add_only() -> None:
    added = _event(Action.ADD, "/module/parport_pc", "module")
    assert static_loads(added, _nothing_loaded) == ("ppdev",)
    removed = _event(Action.REMOVE, "/module/parport_pc", "module")
    assert static_loads(removed, _nothing_loaded) == ()
    other = _event(Action.ADD, "/module/parport", "module")
    assert static_loads(other, _nothing_loaded) == ()


def test_card_and_flash_rules_match_on_their_variables() -> None:
    sd = _event(Action.ADD, "/devices/tifm/tifm_sd0:0", "tifm", TIFM_CARD_TYPE="SD")
    ms = _event(Action.ADD, "/devices/tifm/tifm_ms0:0", "tifm", TIFM_CARD_TYPE="MS")
    xd = _event(Action.ADD, "/devices/tifm/tifm_xd0:0", "tifm", TIFM_CARD_TYPE="XD")
    stick = _event(Action.ADD, "/devices/memstick0", "memstick")
    i2o = _event(Action.ADD, "/devices/i2o/0", "i2o")
    mtd = _event(Action.ADD, "/devices/virtual/mtd/mtd0ro", "mtd", MTD_FTL="smartmedia")
    mtd_rw = _event(Action.ADD, "/devices/virtual/mtd/mtd0", "mtd", MTD_FTL="smartmedia")
    assert static_loads(sd, _nothing_loaded) == ("tifm_sd",)
    assert static_loads(ms, _nothing_loaded) == ("tifm_ms",)
    assert static_loads(xd, _nothing_loaded) == ()
    assert static_loads(stick, _nothing_loaded) == ("ms_block", "mspro_block")
    assert static_loads(i2o, _nothing_loaded) == ("i2o_block",)
    assert static_loads(mtd, _nothing_loaded) == ("sm_ftl",)
    assert static_loads(mtd_rw, _nothing_loaded) == ()
