"""kmodd's depmod under a moved Root: kmod's testsuite layout, paths as the system sees them.

kmod's testsuite runs depmod in a fake root (its path trap maps every absolute path), with
config in `<root>/etc/depmod.d` and modules in `<root>/lib/modules/4.4.4`. kmodd does the
same with a `Root`; the expected modules.dep lines are those of the testsuite's
`correct-modules.dep` files. Also: `kmodctl depmod` and a link named `depmod` reach it.
"""

from __future__ import annotations

import io
import os

import pytest

from kmodd.cli.depmod import run
from kmodd.cli.kmodctl import dispatch
from kmodd.system.root import Root
from tests.kobuild import KoSpec, write_ko

KVER = "4.4.4"


def _module(root: str, path: str) -> None:
    full = f"{root}{path}"
    os.makedirs(os.path.dirname(full), exist_ok=True)
    write_ko(full, KoSpec("mod_simple", modinfo=["license=GPL"]))


def _config(root: str, **files: str) -> None:
    os.makedirs(f"{root}/etc/depmod.d", exist_ok=True)
    for name, text in files.items():
        with open(f"{root}/etc/depmod.d/{name}.conf", "w") as f:
            f.write(text)


def _depmod(root: str, *args: str) -> tuple[int, str]:
    err = io.BytesIO()
    rc = run(["depmod", *args], root=Root(root), stdout=io.BytesIO(), stderr=err, environ={})
    return rc, err.getvalue().decode()


def _dep(root: str, outdir: str = "") -> str:
    with open(f"{root}{outdir}/lib/modules/{KVER}/modules.dep") as f:
        return f.read()


MODULES = "/lib/modules/4.4.4"


@pytest.mark.parametrize(("modules", "config", "expected"), [
    (["kernel/crypto/mod-simple.ko", "updates/mod-simple.ko"],
     {"search": "search updates built-in\n"}, "updates/mod-simple.ko:\n"),
    (["foo/mod-simple.ko", "foobar/mod-simple.ko"],
     {"search": "search foobar foo built-in\n"}, "foobar/mod-simple.ko:\n"),
    (["foo/mod-simple.ko", "foobar/mod-simple.ko", "/lib/modules/external/mod-simple.ko"],
     {"external": "external 4\\.4\\..* /lib/modules/external\n",
      "search": "search external foobar foo built-in\n"},
     "/lib/modules/external/mod-simple.ko:\n"),
    (["foo/mod-simple.ko", "foobar/mod-simple.ko", "/lib/modules/external/mod-simple.ko"],
     {"external": "external 4\\.4\\..* /lib/modules/external\n",
      "search": "search foobar foo built-in external\n"}, "foobar/mod-simple.ko:\n"),
    (["foo/mod-simple.ko", "override/mod-simple.ko"],
     {"override": "override mod-simple 4.4.4 override\n", "search": "search foo built-in\n"},
     "override/mod-simple.ko:\n"),
], ids=["simple", "same-prefix", "external-first", "external-last", "override"])
def test_kmod_testsuite_search_orders_in_a_moved_root(tmp_path, modules: list[str],
                                                      config: dict[str, str],
                                                      expected: str) -> None:
    root = str(tmp_path)
    for m in modules:
        _module(root, m if m.startswith("/") else f"{MODULES}/{m}")
    _config(root, **config)
    assert _depmod(root, KVER)[0] == 0
    assert _dep(root) == expected


def test_outdir_in_a_moved_root(tmp_path) -> None:
    root = str(tmp_path)
    _module(root, f"{MODULES}/kernel/mod-simple.ko")
    assert _depmod(root, "--outdir", "/outdir", KVER)[0] == 0
    assert _dep(root, "/outdir") == "kernel/mod-simple.ko:\n"
    assert not os.path.exists(f"{root}{MODULES}/modules.dep")


def test_an_unwritable_output_directory_is_reported_and_fails(tmp_path) -> None:
    root = str(tmp_path)
    _module(root, f"{MODULES}/kernel/mod-simple.ko")
    with open(f"{root}/blocker", "w") as f:
        f.write("a file where a directory should be")
    rc, err = _depmod(root, "-o", "/blocker", KVER)
    assert rc == 1
    assert err.endswith(f"depmod: FATAL: could not create directory /blocker{MODULES}: "
                        "Not a directory\n")


def test_a_missing_module_directory_is_fatal(tmp_path) -> None:
    rc, err = _depmod(str(tmp_path), KVER)
    assert rc == 1
    assert err == (f"depmod: ERROR: could not open directory {MODULES}: "
                   "No such file or directory\n"
                   "depmod: FATAL: could not search modules: No such file or directory\n")


@pytest.mark.parametrize("argv", [["kmodctl", "depmod", "-n", KVER],
                                  ["/usr/sbin/depmod", "-n", KVER]])
def test_kmodctl_and_a_link_named_depmod_reach_depmod(tmp_path, argv: list[str]) -> None:
    root = str(tmp_path)
    _module(root, f"{MODULES}/kernel/mod-simple.ko")
    out, err = io.BytesIO(), io.BytesIO()
    rc = dispatch(argv, root=Root(root), stdout=out, stderr=err, environ={})
    assert rc == 0
    assert out.getvalue().startswith(b"kernel/mod-simple.ko:\n# Aliases extracted")
