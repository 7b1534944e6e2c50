"""core.kmod.remove: `modprobe -r` in kmod 30's order, against a machine in memory.

`Machine` is both the RemoveIO and the LiveState: a table of live modules and who holds
each; a module's use count is its live holders plus extra references; removing a module
that is not live answers ENOENT, as delete_module does. The front end's messages and the
real kernel's are tested in tests/cli/test_modprobe_loads.py; here, the order and the
errnos.
"""

from __future__ import annotations

from errno import EBUSY, EINVAL, ENOENT, EPERM
from pathlib import Path

import pytest

from kmodd.core.kmod.config import Config, Softdep
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.remove import (
    IGNORE_BUILTIN,
    REMOVE_HOLDERS,
    RemoveOptions,
    remove,
    remove_module,
)
from kmodd.core.kmod.resolve import Module, Resolver
from tests.core.kmod.realkmod import make_tree, modprobe, tree_config, tree_resolver
from tests.fakes import FakeIndexes, FakeSystemView
from tests.toolrun import needs_mount_namespace

MODDIR = FakeIndexes.moddir
#: dev needs bus and core, bus needs core; p1, p2, q1, q2 stand alone.
DEP = {
    "dev": "kernel/dev.ko: kernel/bus.ko kernel/core.ko",
    "bus": "kernel/bus.ko: kernel/core.ko",
    **{name: f"kernel/{name}.ko:" for name in ("core", "p1", "p2", "q1", "q2", "x")},
}
PATHS = [f"{MODDIR}/kernel/{name}.ko" for name in DEP]
PLAIN = RemoveOptions()


class Machine:
    """RemoveIO and LiveState: `live` maps each live module to the modules holding it."""

    def __init__(self, live: dict[str, tuple[str, ...]], refs: dict[str, int] | None = None,
                 errors: dict[str, int] | None = None, *, dry_run: bool = False) -> None:
        """`dry_run`: removing records the call and changes nothing (`modprobe -r -n`)."""
        self.dry_run = dry_run
        self.live = dict(live)
        self.refs = refs or {}
        self.errors = errors or {}
        self.calls: list[str] = []
        self.messages: list[str] = []

    def initstate(self, name: str) -> InitState | None:
        return InitState.LIVE if name in self.live else None

    def log(self, message: str) -> None:
        self.messages.append(message)

    def refcnt(self, name: str) -> int:
        holding = [h for h in self.live.get(name, ()) if h in self.live]
        return len(holding) + self.refs.get(name, 0)

    def holders(self, name: str) -> list[str] | None:
        if name not in self.live:
            return None
        return [h for h in self.live[name] if h in self.live]

    def remove_module(self, mod: Module) -> int:
        self.calls.append(f"rmmod {mod.name}")
        if mod.name in self.errors:
            return self.errors[mod.name]
        if self.dry_run:
            return 0
        if mod.name not in self.live:
            return ENOENT
        del self.live[mod.name]
        return 0

    def run_remove_command(self, mod: Module, command: str) -> int:
        self.calls.append(f"command {mod.name}: {command}")
        return self.errors.get(mod.name, 0)


def resolver(config: Config | None = None, builtin: set[str] | None = None,
             alias: dict[str, list[str]] | None = None) -> Resolver:
    return Resolver(FakeIndexes(dep=DEP, builtin=builtin or set(), alias=alias),
                    config or Config(), FakeSystemView(*PATHS))


def remove_dev(machine: Machine, config: Config | None = None, flags: int = 0,
               opts: RemoveOptions = PLAIN, name: str = "dev") -> int:
    r = resolver(config)
    return remove_module(r, machine, machine, r.new_from_name(name), flags, opts)


#: dev uses bus, bus uses core: what `modprobe dev` leaves live.
CHAIN = {"dev": (), "bus": ("dev",), "core": ("bus",)}


def test_the_module_goes_then_each_dependency_unused_when_its_turn_comes() -> None:
    machine = Machine(CHAIN)
    assert remove_dev(machine) == 0
    # core's turn comes first (load order), while bus still holds it: core stays.
    assert (machine.calls, set(machine.live)) == (["rmmod dev", "rmmod bus"], {"core"})


def test_dependencies_held_only_by_the_module_all_go() -> None:
    machine = Machine({"dev": (), "bus": ("dev",), "core": ("dev",)})
    assert remove_dev(machine) == 0
    assert (machine.calls, machine.live) == (["rmmod dev", "rmmod core", "rmmod bus"], {})


def test_post_softdeps_go_first_in_reverse_and_pre_softdeps_last_in_reverse() -> None:
    config = Config(softdeps=(Softdep("dev", ("p1", "p2"), ("q1", "q2")),))
    machine = Machine({**CHAIN, "p1": (), "p2": (), "q1": (), "q2": ()})
    assert remove_dev(machine, config) == 0
    assert machine.calls == ["rmmod q2", "rmmod q1", "rmmod dev", "rmmod bus", "rmmod p2",
                             "rmmod p1"]


def test_a_module_in_use_is_ebusy_after_its_post_softdeps_went() -> None:
    config = Config(softdeps=(Softdep("dev", ("p1",), ("q1",)),))
    machine = Machine({**CHAIN, "p1": (), "q1": ()}, refs={"dev": 1})
    assert remove_dev(machine, config) == EBUSY
    assert (machine.calls, machine.messages) == (["rmmod q1"], ["Module dev is in use.\n"])


def test_quiet_inuse_keeps_the_in_use_message_back() -> None:
    machine = Machine(CHAIN, refs={"dev": 1})
    assert remove_dev(machine, opts=RemoveOptions(quiet_inuse=True)) == EBUSY
    assert (machine.calls, machine.messages) == ([], [])


def test_wait_leaves_the_use_count_to_the_kernel() -> None:
    machine = Machine(CHAIN, refs={"dev": 1})
    assert remove_dev(machine, opts=RemoveOptions(wait=True)) == 0
    assert machine.calls == ["rmmod dev", "rmmod bus"]


def test_a_held_module_is_ebusy_without_remove_holders() -> None:
    machine = Machine(CHAIN)
    assert remove_dev(machine, name="bus") == EBUSY
    assert (machine.calls, machine.messages) == ([], ["Module bus is in use.\n"])


def test_remove_holders_removes_the_holders_first_and_then_the_module_again() -> None:
    machine = Machine(CHAIN)
    # dev goes, and with it its unused dependency bus; bus itself then answers ENOENT.
    assert remove_dev(machine, flags=REMOVE_HOLDERS, name="bus") == ENOENT
    assert machine.calls == ["rmmod dev", "rmmod bus", "rmmod bus"]
    assert set(machine.live) == {"core"}


def test_a_holder_in_use_stops_remove_holders_with_its_errno() -> None:
    machine = Machine(CHAIN, refs={"dev": 2})
    assert remove_dev(machine, flags=REMOVE_HOLDERS, name="bus") == EBUSY
    assert (machine.calls, machine.messages) == ([], ["Module dev is in use.\n"])


def test_a_module_not_loaded_is_quietly_done_unless_first_time() -> None:
    assert remove_dev(Machine({})) == 0
    machine = Machine({})
    assert remove_dev(machine, opts=RemoveOptions(first_time=True)) == ENOENT
    assert (machine.calls, machine.messages) == ([], ["Module dev is not in kernel.\n"])


def test_a_built_in_module_is_enoent_unless_ignore_builtin() -> None:
    machine = Machine({})
    r = resolver(builtin={"x"})
    assert remove_module(r, machine, machine, r.new_from_name("x"), 0, PLAIN) == ENOENT
    assert remove_module(r, machine, machine, r.new_from_name("x"), IGNORE_BUILTIN,
                         PLAIN) == 0
    assert (machine.calls, machine.messages) == ([], ["Module x is builtin.\n"])


def test_a_built_in_softdep_is_skipped_quietly() -> None:
    config = Config(softdeps=(Softdep("dev", ("x",), ()),))
    machine = Machine(CHAIN)
    r = resolver(config, builtin={"x"})
    assert remove_module(r, machine, machine, r.new_from_name("dev"), 0, PLAIN) == 0
    assert (machine.calls, machine.messages) == (["rmmod dev", "rmmod bus"], [])


def test_a_remove_command_runs_instead_of_delete_module_and_leaves_the_dependencies() -> None:
    config = Config(removes=(("dev", "/bin/rm-dev"),))
    machine = Machine({}, refs={"dev": 3})
    assert remove_dev(machine, config) == 0
    assert machine.calls == ["command dev: /bin/rm-dev"]


def test_a_failing_remove_command_is_the_result() -> None:
    config = Config(removes=(("dev", "/bin/false"),), softdeps=(Softdep("dev", ("p1",), ()),))
    machine = Machine({"p1": ()}, errors={"dev": EPERM})
    assert remove_dev(machine, config) == EPERM
    assert machine.calls == ["command dev: /bin/false"]


def test_ignore_commands_ignores_remove_lines_and_softdeps() -> None:
    config = Config(removes=(("dev", "/bin/rm-dev"),), softdeps=(Softdep("dev", ("p1",), ()),))
    machine = Machine({**CHAIN, "p1": ()})
    assert remove_dev(machine, config, opts=RemoveOptions(ignore_commands=True)) == 0
    assert machine.calls == ["rmmod dev", "rmmod bus"]


def test_ignore_loaded_asks_neither_state_nor_use_count() -> None:
    machine = Machine({}, refs={"dev": 1})
    assert remove_dev(machine, opts=RemoveOptions(ignore_loaded=True)) == ENOENT
    assert machine.calls == ["rmmod dev"]


def test_a_failing_delete_module_is_the_result_and_nothing_after_it_runs() -> None:
    config = Config(softdeps=(Softdep("dev", ("p1",), ()),))
    machine = Machine({**CHAIN, "p1": ()}, errors={"dev": EINVAL})
    assert remove_dev(machine, config) == EINVAL
    assert machine.calls == ["rmmod dev"]


def test_failures_removing_dependencies_and_softdeps_are_ignored() -> None:
    config = Config(softdeps=(Softdep("dev", ("p1",), ("q1",)),))
    machine = Machine({**CHAIN, "p1": (), "q1": ()},
                      errors={"q1": EBUSY, "bus": EBUSY, "p1": EPERM})
    assert remove_dev(machine, config) == 0
    assert machine.calls == ["rmmod q1", "rmmod dev", "rmmod bus", "rmmod p1"]


def test_remove_looks_the_name_up_and_an_unknown_name_is_enoent() -> None:
    machine = Machine({})
    assert remove(resolver(), machine, machine, "nothing", 0, PLAIN) == ENOENT
    assert machine.messages == ["Module nothing not found.\n"]


@pytest.mark.parametrize(("refs", "result", "calls"), [
    ({}, 0, ["rmmod p1", "rmmod p2"]),
    ({"p1": 1}, EBUSY, []),
])
def test_remove_takes_each_module_an_alias_names_and_stops_at_the_first_failure(
        refs: dict[str, int], result: int, calls: list[str]) -> None:
    machine = Machine({"p1": (), "p2": ()}, refs=refs)
    r = resolver(alias={"a:1": ["p1", "p2"]})
    assert remove(r, machine, machine, "a:1", 0, PLAIN) == result
    assert machine.calls == calls


# -- against the real modprobe -------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("remove"))


SOFTDEPS = "softdep kmodd_dev pre: kmodd_pre post: kmodd_post\n"
#: What `modprobe kmodd_dev` leaves live with SOFTDEPS: name -> (use count, holders).
LOADED = {"kmodd_dev": (0, ()), "kmodd_bus": (1, ("kmodd_dev",)),
          "kmodd_core": (1, ("kmodd_bus",)), "kmodd_pre": (0, ()), "kmodd_post": (0, ())}


@pytest.mark.parametrize(("conf", "live", "args"), [
    (SOFTDEPS, LOADED, ("kmodd_dev",)),
    (SOFTDEPS, {**LOADED, "kmodd_dev": (1, ())}, ("kmodd_dev",)),
    (SOFTDEPS, {**LOADED, "kmodd_dev": (1, ())}, ("-w", "1", "kmodd_dev")),
    ("", {**LOADED, "kmodd_bus": (0, ()), "kmodd_core": (0, ())}, ("kmodd_dev",)),
    ("", LOADED, ("kmodd_bus",)),
    ("", LOADED, ("--remove-holders", "kmodd_bus")),
    ("", LOADED, ("kmodd_other",)),
    ("", LOADED, ("--first-time", "kmodd_other")),
    ("", LOADED, ("kmodd_rtc",)),
    ("remove kmodd_dev /bin/echo x\n", {}, ("kmodd_dev",)),
    ("remove kmodd_dev /bin/echo x\n" + SOFTDEPS, LOADED, ("-i", "kmodd_dev")),
])
@needs_mount_namespace
def test_a_dry_run_removes_in_the_order_the_real_modprobe_does(
        tree: Path, conf: str, live: dict[str, tuple[int, tuple[str, ...]]],
        args: tuple[str, ...]) -> None:
    r = tree_resolver(tree, tree_config(tree, conf))
    machine = Machine({n: h for n, (_c, h) in live.items()},
                      refs={n: c - len(h) for n, (c, h) in live.items()}, dry_run=True)
    opts = RemoveOptions(ignore_commands="-i" in args, first_time="--first-time" in args,
                         wait="-w" in args)
    flags = REMOVE_HOLDERS if "--remove-holders" in args else 0
    err = remove(r, machine, machine, args[-1], flags, opts)
    real = modprobe(tree, "-r", "-v", "--dry-run", *args, sys_module=live)
    ours = [call if call.startswith("rmmod ") else "remove " + call.split(": ", 1)[1]
            for call in machine.calls]
    assert ours == real.stdout.splitlines()
    assert "".join(f"modprobe: FATAL: {m}" for m in machine.messages) == real.stderr
    assert (err != 0) == (real.returncode == 1)
