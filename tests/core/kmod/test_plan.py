"""core.kmod.plan: what probing a module means (plan_probe, probe_list) and how a plan runs
(run_plan), as libkmod's kmod_module_probe_insert_module does both.

Plans are made over in-memory indexes and run against `Recorder`, an Actions that records
each call and answers the errno a test gives it; the printed plans are held to the real
`modprobe --show-depends` on a depmod-made tree.
"""

from __future__ import annotations

from errno import EEXIST, ENOENT, EPERM
from pathlib import Path

import pytest

from kmodd.core.kmod.config import Config, ConfigFile, Softdep, build_config
from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.plan import (
    Plan,
    ProbeFlag,
    Skip,
    Step,
    expand_cmdline_opts,
    options_concat,
    plan_probe,
    probe_list,
    run_plan,
)
from kmodd.core.kmod.resolve import Resolver
from tests.core.kmod.realkmod import MODDIR as TREE_MODDIR
from tests.core.kmod.realkmod import (
    make_tree,
    modprobe,
    shown_depends,
    tree_config,
    tree_resolver,
)
from tests.fakes import FakeIndexes, FakeLive, FakeSystemView
from tests.toolrun import needs_mount_namespace

MODDIR = FakeIndexes.moddir
#: dev needs bus, bus needs core; the rest stand alone.
DEP = {
    "dev": "kernel/dev.ko: kernel/bus.ko kernel/core.ko",
    "bus": "kernel/bus.ko: kernel/core.ko",
    "core": "kernel/core.ko:",
    "pre": "kernel/pre.ko:",
    "post": "kernel/post.ko:",
    "other": "kernel/other.ko:",
}
PATHS = [f"{MODDIR}/kernel/{name}.ko" for name in DEP]
NO_FLAGS = ProbeFlag(0)


def resolver(config: Config | None = None, *, builtin: set[str] | None = None,
             alias: dict[str, list[str]] | None = None) -> Resolver:
    indexes = FakeIndexes(dep=DEP, builtin=builtin or set(), alias=alias)
    return Resolver(indexes, config or Config(), FakeSystemView(*PATHS))


def plan(r: Resolver, key: str, flags: ProbeFlag = NO_FLAGS, extra: str | None = None,
         live: FakeLive | None = None) -> Plan:
    (mod,) = r.lookup(key)
    return plan_probe(r, live or FakeLive(), mod, flags, extra)


def steps(p: Plan) -> list[tuple[str, str | None, str | None, bool, bool]]:
    return [(s.name, s.options, s.command, s.required, s.requested) for s in p.steps]


def order(p: Plan) -> list[str]:
    return [s.name for s in p.steps]


# -- the probe list ---------------------------------------------------------------------------

def test_dependencies_load_first_in_the_lines_reverse_order_and_the_module_last() -> None:
    p = plan(resolver(), "dev")
    assert (p.early, p.skip) == (None, None)
    assert steps(p) == [("core", None, None, True, False), ("bus", None, None, True, False),
                        ("dev", None, None, True, True)]


def test_softdeps_surround_the_module_and_are_not_required() -> None:
    config = Config(softdeps=(Softdep("dev", ("pre",), ("post",)),))
    p = plan(resolver(config), "dev")
    assert [(s.name, s.required) for s in p.steps] == [
        ("core", True), ("bus", True), ("pre", False), ("dev", True), ("post", False)]


def test_the_softdeps_of_a_dependency_surround_the_dependency() -> None:
    config = Config(softdeps=(Softdep("b*", ("pre",), ("post",)),))
    assert order(plan(resolver(config), "dev")) == ["core", "pre", "bus", "post", "dev"]


def test_a_softdep_is_planned_with_its_own_dependencies() -> None:
    config = Config(softdeps=(Softdep("other", ("bus",), ()),))
    p = plan(resolver(config), "other")
    assert [(s.name, s.required) for s in p.steps] == [
        ("core", False), ("bus", False), ("other", True)]


def test_a_softdep_loop_is_cut_where_it_comes_back() -> None:
    config = Config(softdeps=(Softdep("pre", ("post",), ()), Softdep("post", ("pre",), ())))
    assert order(plan(resolver(config), "pre")) == ["post", "pre"]


def test_a_module_with_softdeps_ignores_its_install_command() -> None:
    config = Config(installs=(("dev", "/bin/dev"), ("bus", "/bin/bus")),
                    softdeps=(Softdep("dev", (), ("post",)),))
    assert [(s.name, s.command) for s in plan(resolver(config), "dev").steps] == [
        ("core", None), ("bus", "/bin/bus"), ("dev", None), ("post", None)]


def test_ignore_command_drops_the_requested_modules_command_and_its_softdeps_only() -> None:
    config = Config(installs=(("dev", "/bin/dev"), ("bus", "/bin/bus")),
                    softdeps=(Softdep("dev", ("pre",), ()),))
    p = plan(resolver(config), "dev", ProbeFlag.IGNORE_COMMAND)
    assert [(s.name, s.command) for s in p.steps] == [
        ("core", None), ("bus", "/bin/bus"), ("dev", None)]


def test_probe_list_clears_the_marks_of_the_previous_probe() -> None:
    r = resolver(Config(softdeps=(Softdep("dev", ("pre",), ()),)))
    (dev,) = r.lookup("dev")
    first = probe_list(r, dev, False)
    again = probe_list(r, dev, False)
    assert [m.name for m in again] == [m.name for m in first] == ["core", "bus", "pre", "dev"]
    (pre,) = r.lookup("pre")
    assert [m.name for m in probe_list(r, pre, False)] == ["pre"]
    assert (pre.required, dev.visited) == (True, False)


# -- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("opt", "extra", "joined"), [
    (None, None, None), ("", "", None), ("a=1", None, "a=1 "), (None, "x=1", "x=1"),
    ("a=1", "x=1", "a=1 x=1"), ("", "x=1", " x=1"), ("a=1", "", "a=1 "),
])
def test_options_concat_puts_a_space_after_config_options_always(
        opt: str | None, extra: str | None, joined: str | None) -> None:
    assert options_concat(opt, extra) == joined


def test_extra_options_go_to_the_requested_module_after_its_config_options() -> None:
    config = Config(options=(("dev", "a=1"), ("bus", "b=2"), ("dev", "c=3")))
    assert [s.options for s in plan(resolver(config), "dev", extra="x=9").steps] == [
        None, "b=2 ", "a=1 c=3 x=9"]


def test_kernel_command_line_options_follow_the_files_options() -> None:
    config = build_config([(ConfigFile("a.conf", "/etc/modprobe.d/a.conf"),
                            b"options dev file=1\n")], b"quiet dev.cmd=2 bus.b=3")
    assert [s.options for s in plan(resolver(config), "dev", extra="x=9").steps] == [
        None, "b=3 ", "file=1 cmd=2 x=9"]


def test_options_written_for_the_alias_apply_to_the_module_found_through_it() -> None:
    config = Config(options=(("pci:1", "al=1"), ("dev", "d=1")))
    p = plan(resolver(config, alias={"pci:1": ["dev"]}), "pci:1")
    assert p.steps[-1].options == "al=1 d=1 "


@pytest.mark.parametrize(("command", "options", "expanded"), [
    ("/bin/x $CMDLINE_OPTS", "a=1 b=2", "/bin/x a=1 b=2"),
    ("/bin/x $CMDLINE_OPTS; /bin/y $CMDLINE_OPTS", "a", "/bin/x a; /bin/y a"),
    ("/bin/x $CMDLINE_OPTS", None, "/bin/x "),
    ("/bin/x $CMDLINE_OPT", "a", "/bin/x $CMDLINE_OPT"),
])
def test_expand_cmdline_opts_replaces_every_occurrence(command: str, options: str | None,
                                                       expanded: str) -> None:
    assert expand_cmdline_opts(command, options) == expanded


# -- early answers ----------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "flags", "early"), [
    (InitState.LIVE, NO_FLAGS, 0),
    (InitState.LIVE, ProbeFlag.FAIL_ON_LOADED, EEXIST),
    (InitState.LIVE, ProbeFlag.IGNORE_LOADED, None),
    (InitState.COMING, NO_FLAGS, None),
    (InitState.GOING, NO_FLAGS, None),
    (None, NO_FLAGS, None),
])
def test_a_module_already_live_is_answered_before_any_plan(
        state: InitState | None, flags: ProbeFlag, early: int | None) -> None:
    live = FakeLive(**({"dev": state} if state is not None else {}))
    p = plan(resolver(), "dev", flags, live=live)
    assert (p.early, p.skip, len(p.steps)) == (
        (early, Skip.LOADED, 0) if early is not None else (None, None, 3))


def test_a_built_in_module_counts_as_loaded_without_asking_sys_module() -> None:
    live = FakeLive()
    p = plan(resolver(builtin={"dev"}), "dev", live=live)
    assert (p.early, p.skip, live.asked) == (0, Skip.LOADED, [])


def test_not_in_kernel_skips_the_question() -> None:
    r = resolver()
    live = FakeLive(dev=InitState.LIVE)
    (dev,) = r.lookup("dev")
    p = plan_probe(r, live, dev, NO_FLAGS, not_in_kernel=True)
    assert (order(p), live.asked) == (["core", "bus", "dev"], [])


@pytest.mark.parametrize(("flags", "key", "refused"), [
    (ProbeFlag.APPLY_BLACKLIST, "dev", True),
    (ProbeFlag.APPLY_BLACKLIST_ALL, "dev", True),
    (ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY, "pci:1", True),
    (ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY, "dev", False),
    (ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY | ProbeFlag.APPLY_BLACKLIST, "dev", True),
    (NO_FLAGS, "pci:1", False),
])
def test_a_blacklisted_module_is_refused_when_a_blacklist_flag_applies(
        flags: ProbeFlag, key: str, refused: bool) -> None:
    r = resolver(Config(blacklists=("dev",)), alias={"pci:1": ["dev"]})
    p = plan(r, key, flags)
    if refused:
        assert (p.early, p.skip, p.steps) == (0, Skip.BLACKLISTED, ())
    else:
        assert (p.early, order(p)) == (None, ["core", "bus", "dev"])


def test_blacklist_all_drops_blacklisted_dependencies_and_softdeps_from_the_plan() -> None:
    config = Config(blacklists=("bus", "pre"), softdeps=(Softdep("dev", ("pre",), ("post",)),))
    assert order(plan(resolver(config), "dev", ProbeFlag.APPLY_BLACKLIST_ALL)) == [
        "core", "dev", "post"]
    assert order(plan(resolver(config), "dev", ProbeFlag.APPLY_BLACKLIST)) == [
        "core", "bus", "pre", "dev", "post"]


# -- running a plan ---------------------------------------------------------------------------

class Recorder:
    """Actions that record each call and answer `errors[name]` (0 when not given)."""

    def __init__(self, **errors: int) -> None:
        self.errors = errors
        self.calls: list[tuple[str, ...]] = []

    def insert(self, step: Step, options: str, flags: ProbeFlag) -> int:
        self.calls.append(("insert", step.name, str(step.path), options, str(int(flags))))
        return self.errors.get(step.name, 0)

    def run_install(self, step: Step, command: str) -> int:
        self.calls.append(("install", step.name, command))
        return self.errors.get(step.name, 0)


SOFT = Config(softdeps=(Softdep("dev", ("pre",), ("post",)),))


def run(config: Config, actions: Recorder | None, flags: ProbeFlag = NO_FLAGS,
        live: FakeLive | None = None, extra: str | None = None) -> tuple[int, list[int]]:
    """Plan and run `dev`; the result and each step's errno."""
    r = resolver(config)
    live = live or FakeLive()
    p = plan(r, "dev", flags & ~ProbeFlag.FAIL_ON_LOADED, extra, live)
    results: list[int] = []
    err = run_plan(live, p, flags, actions, on_step=lambda _s, e: results.append(e))
    return err, results


def test_each_step_is_inserted_in_order_with_its_path_options_and_the_flags() -> None:
    actions = Recorder()
    flags = ProbeFlag.FORCE_VERMAGIC
    config = Config(options=(("bus", "b=1"),))
    assert run(config, actions, flags, extra="x=1") == (0, [0, 0, 0])
    assert actions.calls == [
        ("insert", "core", f"{MODDIR}/kernel/core.ko", "", "1"),
        ("insert", "bus", f"{MODDIR}/kernel/bus.ko", "b=1 ", "1"),
        ("insert", "dev", f"{MODDIR}/kernel/dev.ko", "x=1", "1")]


def test_an_install_command_runs_instead_with_cmdline_opts_expanded() -> None:
    actions = Recorder()
    config = Config(options=(("dev", "a=1"),), installs=(("dev", "/bin/x $CMDLINE_OPTS"),))
    assert run(config, actions, extra="b=2") == (0, [0, 0, 0])
    assert actions.calls[2] == ("install", "dev", "/bin/x a=1 b=2")


def test_eexist_from_the_kernel_counts_as_success() -> None:
    actions = Recorder(bus=EEXIST, dev=EEXIST)
    assert run(Config(), actions) == (0, [0, EEXIST, EEXIST])
    assert [c[1] for c in actions.calls] == ["core", "bus", "dev"]


def test_a_failing_softdep_is_ignored() -> None:
    actions = Recorder(pre=ENOENT, post=EPERM)
    assert run(SOFT, actions) == (0, [0, 0, ENOENT, 0, EPERM])
    assert [c[1] for c in actions.calls] == ["core", "bus", "pre", "dev", "post"]


def test_a_failing_required_module_ends_the_chain_with_its_errno() -> None:
    actions = Recorder(bus=EPERM)
    assert run(SOFT, actions) == (EPERM, [0, EPERM])
    assert [c[1] for c in actions.calls] == ["core", "bus"]


def test_a_failing_requested_module_is_the_result_and_its_post_softdeps_do_not_run() -> None:
    actions = Recorder(dev=ENOENT)
    assert run(SOFT, actions) == (ENOENT, [0, 0, 0, ENOENT])


def test_a_failing_install_command_of_a_dependency_ends_the_chain() -> None:
    actions = Recorder(bus=-1)
    assert run(Config(installs=(("bus", "/bin/false"),)), actions) == (-1, [0, -1])


def test_modules_already_live_are_skipped_as_eexist() -> None:
    actions = Recorder()
    live = FakeLive(core=InitState.LIVE, pre=InitState.LIVE)
    assert run(SOFT, actions, live=live) == (0, [EEXIST, 0, EEXIST, 0, 0])
    assert [c[1] for c in actions.calls] == ["bus", "dev", "post"]


def test_ignore_loaded_inserts_live_modules_again() -> None:
    actions = Recorder()
    live = FakeLive(core=InitState.LIVE)
    assert run(Config(), actions, ProbeFlag.IGNORE_LOADED, live=live) == (0, [0, 0, 0])
    assert live.asked == []


def test_fail_on_loaded_stops_at_the_requested_module_found_live_while_running() -> None:
    actions = Recorder()
    live = FakeLive(core=InitState.LIVE, dev=InitState.LIVE)
    p_live = FakeLive(core=InitState.LIVE)
    r = resolver(SOFT)
    p = plan(r, "dev", NO_FLAGS, None, p_live)
    results: list[int] = []
    err = run_plan(live, p, ProbeFlag.FAIL_ON_LOADED, actions,
                   on_step=lambda _s, e: results.append(e))
    assert (err, results) == (EEXIST, [EEXIST, 0, 0, EEXIST])
    assert [c[1] for c in actions.calls] == ["bus", "pre"]


def test_a_dry_run_shows_every_step_and_does_nothing() -> None:
    actions = Recorder()
    shown: list[tuple[str, bool, str]] = []
    r = resolver(Config(installs=(("bus", "/bin/b $CMDLINE_OPTS"),), options=(("dev", "a"),)))
    p = plan(r, "dev", extra="x")
    err = run_plan(FakeLive(), p, ProbeFlag.DRY_RUN, actions,
                   show=lambda s, install, opts: shown.append((s.name, install, opts)))
    assert (err, actions.calls) == (0, [])
    assert shown == [("core", False, ""), ("bus", True, ""), ("dev", False, "a x")]


def test_an_early_answer_is_the_result_and_nothing_runs() -> None:
    actions = Recorder()
    r = resolver()
    (dev,) = r.lookup("dev")
    early = Plan(dev.name, skip=Skip.LOADED, early=EEXIST)
    assert run_plan(FakeLive(), early, NO_FLAGS, actions) == EEXIST
    assert actions.calls == []


def test_without_actions_a_plan_runs_to_its_end_doing_nothing() -> None:
    assert run(SOFT, None) == (0, [0, 0, 0, 0, 0])


# -- against the real modprobe --------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("plan"))


def show_depends(base: Path, conf: str, key: str, *args: str) -> list[str]:
    """kmodd's `--show-depends KEY ARGS` on the tree: lookup, then plan and a dry run of
    each module found, printed as modprobe's print_action prints them."""
    r = tree_resolver(base, tree_config(base, conf))
    blacklist = ProbeFlag.APPLY_BLACKLIST if "-b" in args else NO_FLAGS
    flags = (ProbeFlag.IGNORE_LOADED | ProbeFlag.DRY_RUN
             | ProbeFlag.APPLY_BLACKLIST_ALIAS_ONLY | blacklist)
    extra = " ".join(a for a in args if a != "-b") or None
    out: list[str] = []

    def show(step: Step, install: bool, options: str) -> None:
        if install:
            out.append(f"install {step.command} {options}")
        elif step.path is not None:
            out.append(f"insmod {step.path} {options}")
        elif step.builtin:
            out.append(f"builtin {step.name}")

    live = FakeLive()
    for mod in r.lookup(key):
        run_plan(live, plan_probe(r, live, mod, flags, extra), flags, None, show)
    return [line.replace(TREE_MODDIR, "MODDIR") for line in out]


@pytest.mark.parametrize(("conf", "key", "args"), [
    ("", "kmodd-dev", ()),
    ("options kmodd_dev a=1\noptions kmodd_bus b=2\n", "kmodd_dev", ("x=1", "y=2")),
    ("softdep kmodd_bus pre: kmodd_pre post: kmodd_post\n", "kmodd_dev", ()),
    ("softdep kmodd_d* pre: kmodd_bus\n", "kmodd_dev", ()),
    ("softdep kmodd_pre pre: kmodd_post\nsoftdep kmodd_post pre: kmodd_pre\n", "kmodd_pre", ()),
    ("install kmodd_bus /bin/echo bus $CMDLINE_OPTS\noptions kmodd_bus b=1\n", "kmodd_dev",
     ()),
    ("install kmodd_dev /bin/echo x\nsoftdep kmodd_dev post: kmodd_post\n", "kmodd_dev", ()),
    ("blacklist kmodd_other\n", "kmodd:shared", ()),
    ("blacklist kmodd_dev\n", "kmodd_dev", ()),
    ("blacklist kmodd_dev\n", "kmodd_dev", ("-b",)),
    ("blacklist kmodd_bus\n", "kmodd_dev", ("-b",)),
    ("alias kmodd-x kmodd_dev\noptions kmodd-x al=1\noptions kmodd_dev d=1\n", "kmodd-x",
     ("e=1",)),
    ("", "kmodd_rtc", ()),
    ("", "platform:rtc_cmos", ()),
])
@needs_mount_namespace
def test_a_plan_prints_as_the_real_modprobe_show_depends_prints_it(
        tree: Path, conf: str, key: str, args: tuple[str, ...]) -> None:
    ours = show_depends(tree, conf, key, *args)
    flags = [a for a in args if a == "-b"]
    extra = [a for a in args if a != "-b"]
    real = modprobe(tree, *flags, "--show-depends", key, *extra)
    assert ours == shown_depends(tree, real.stdout)
