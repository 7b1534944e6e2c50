"""`kmodctl explain`: from the daemon when it runs, computed here when it does not (and said so)."""

from __future__ import annotations

import io
import json
import os

import pytest

from kmodd.cli import client
from kmodd.cli.kmodctl import dispatch
from kmodd.core.explain.model import (
    Check,
    Evidence,
    Explanation,
    Finding,
    Verdict,
    from_json,
    render_text,
    to_json,
)
from kmodd.system.control_client import VarlinkClientError
from kmodd.system.diagnose import explain
from kmodd.system.root import Root
from tests.fakes import DEBIAN_RELEASE, FakeKernel
from tests.kofixtures import module_tree, standard_modinfo
from tests.toolrun import Ran

MODDIR = f"/lib/modules/{DEBIAN_RELEASE}"
MODULE_LESS_KERNEL = not os.path.exists("/proc/modules")


def kmodctl(root: Root, *args: str, kernel: FakeKernel | None = None) -> Ran:
    out, err = io.BytesIO(), io.BytesIO()
    rc = client.run(["kmodctl", *args], root=root, stdout=out, stderr=err,
                    environ={"PATH": os.environ["PATH"]},
                    kernel=kernel.port() if kernel is not None else None)
    return Ran(rc, out.getvalue(), err.getvalue())


@pytest.fixture
def simulated(tmp_path) -> FakeKernel:
    root = Root(module_tree(str(tmp_path / "root"), DEBIAN_RELEASE, {
        "kernel/drivers/a/mod-a.ko": {"modinfo": standard_modinfo("mod_a", "parmtype=x:int")},
        "kernel/drivers/b/mod-b.ko": {"modinfo": standard_modinfo("mod_b")},
    }, {"etc/modprobe.d/b.conf": "blacklist mod_b\n"}))
    return FakeKernel(root, module_sig=False)


def test_without_the_daemon_it_computes_here_and_says_so(simulated):
    ran = kmodctl(simulated.root, "explain", "mod-a", kernel=simulated)
    expected = explain("mod-a", root=simulated.root, moddir=MODDIR, kernel=simulated.port())
    assert ran == Ran(0, ("(computed by kmodctl (kmodd is not running))\n"
                          + render_text(expected)).encode(), b"")


def test_json_carries_who_computed_it_and_the_explanation(simulated):
    ran = kmodctl(simulated.root, "--json", "explain", "nosuch", kernel=simulated)
    assert ran.rc == client.EXIT_PROBLEMS
    data = json.loads(ran.out)
    assert data["computed_by"] == "kmodctl (kmodd is not running)"
    expl = from_json(data["explanation"])
    assert [(f.check, f.verdict) for f in expl.findings] == [(Check.NOT_FOUND, Verdict.PROBLEM)]


def test_try_loads_here_and_explains_the_failed_attempt(simulated):
    ran = kmodctl(simulated.root, "explain", "--try", "mod-a", "x=oops", kernel=simulated)
    assert ran.rc == client.EXIT_PROBLEMS
    lines = ran.out.decode().splitlines()
    assert lines[0] == "(computed by kmodctl (a load attempted here))"
    assert "[problem] attempt: the load failed with EINVAL: invalid" in lines
    assert "    kernel log: mod_a: `oops' invalid for parameter `x'" in lines
    assert "    options: x=oops" in lines


def test_try_that_loads_explains_a_loaded_module(simulated):
    ran = kmodctl(simulated.root, "explain", "--try", "mod-a", kernel=simulated)
    assert ran.rc == 0
    assert b"[ok] state: already loaded\n" in ran.out
    assert [m.name for m in simulated.loaded] == ["mod_a"]


def test_a_blacklisted_module_by_name_is_a_warning_not_a_problem(simulated):
    ran = kmodctl(simulated.root, "explain", "mod-b", kernel=simulated)
    assert ran.rc == 0
    assert b"[warning] blacklist: blacklisted: udev and kmodd will not load it" in ran.out


@pytest.mark.parametrize("args", [["explain", "mod-a", "x=1"], ["status", "--try"],
                                  ["explain"]])
def test_misuse_is_a_usage_error(simulated, args):
    ran = kmodctl(simulated.root, *args)
    assert ran.rc == client.EXIT_USAGE
    assert ran.out == b""


def test_kmodctl_reaches_explain_through_its_dispatcher(simulated):
    out, err = io.BytesIO(), io.BytesIO()
    rc = dispatch(["kmodctl", "explain", "nosuch"], root=simulated.root, stdout=out,
                  stderr=err, environ={})
    assert rc == client.EXIT_PROBLEMS
    assert out.getvalue().startswith(b"(computed by kmodctl (kmodd is not running))\n"
                                     b"nosuch (no module): 1 problem")


class _Daemon:
    """A connected client whose daemon answers Explain with a findings explanation."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = []

    def call(self, method, parameters=None):
        self.calls.append((method, parameters))
        return self.reply


def test_an_explanation_from_the_daemon_is_shown_as_the_daemons():
    expl = Explanation("vfat", "6.1", "/lib/modules/6.1", ("vfat",), (
        Finding(Check.ATTEMPT, Verdict.PROBLEM, "the load failed with ENOENT", "vfat",
                (Evidence("kernel log", "vfat: Unknown symbol fat_dir_empty (err -2)"),)),))
    daemon = _Daemon({"explanation": to_json(expl)})
    printed: list[str] = []
    ctx = client.Context(daemon, ["vfat"], False, False, None, printed.append)  # type: ignore[arg-type]
    assert client._explain(ctx) == client.EXIT_PROBLEMS
    assert daemon.calls == [("io.kmodd.Explain", {"module": "vfat"})]
    assert "".join(printed) == "(computed by kmodd)\n" + render_text(expl)


def test_what_the_daemon_saw_follows_its_explanation():
    expl = Explanation("vfat", "6.1", "/lib/modules/6.1", ("vfat",), ())
    seen = ["kmodd's last outcome for vfat: inserted for /devices/x"]
    daemon = _Daemon({"explanation": to_json(expl), "seen": seen})
    printed: list[str] = []
    ctx = client.Context(daemon, ["vfat"], False, False, None, printed.append)  # type: ignore[arg-type]
    assert client._explain(ctx) == client.EXIT_OK
    assert "".join(printed) == ("(computed by kmodd)\n" + render_text(expl) + "\nSeen by kmodd:\n"
                                "    kmodd's last outcome for vfat: inserted for /devices/x\n")


def test_what_the_daemon_saw_is_a_json_field_of_its_own():
    expl = Explanation("vfat", "6.1", "/lib/modules/6.1", ("vfat",), ())
    daemon = _Daemon({"explanation": to_json(expl), "seen": ["kmodd has not acted on vfat"]})
    printed: list[str] = []
    ctx = client.Context(daemon, ["vfat"], True, False, None, printed.append)  # type: ignore[arg-type]
    assert client._explain(ctx) == client.EXIT_OK
    assert json.loads("".join(printed)) == {"computed_by": "kmodd", "explanation": to_json(expl),
                                            "seen": ["kmodd has not acted on vfat"]}


def test_a_malformed_explanation_from_the_daemon_is_an_error_naming_the_field():
    daemon = _Daemon({"explanation": {"module": "x", "plan": [], "lines": ["insert x"]}})
    ctx = client.Context(daemon, ["x"], False, False, None, lambda _: None)  # type: ignore[arg-type]
    with pytest.raises(VarlinkClientError) as raised:
        client._explain(ctx)
    assert (raised.value.name, raised.value.parameters) == (
        client.MALFORMED_REPLY,
        {"reason": "explanation.findings: missing or of the wrong type"})


@pytest.mark.skipif(not MODULE_LESS_KERNEL, reason="only safe on a kernel without modules")
def test_on_this_host_a_try_is_explained_as_a_kernel_without_module_support(tmp_path):
    root = Root(module_tree(str(tmp_path / "root"), os.uname().release, {
        "kernel/drivers/a/mod-a.ko": {}}))
    ran = kmodctl(root, "explain", "--try", "mod-a")
    assert ran.rc == client.EXIT_PROBLEMS
    assert "[problem] attempt: the load failed with ENOSYS: not-supported" in \
        ran.out.decode().splitlines()
