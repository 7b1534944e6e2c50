"""The reference for tests/core/kmod: a tiny module tree indexed by the real depmod, the real
modprobe run on it, and kmodd's pure pieces (indexes, configuration, resolver) over the same
files.

The real modprobe reads the host's /proc/cmdline, whatever `-d` says; `modprobe` therefore
runs in a private mount namespace (`unshare -m`) with the test's command line bound over it,
so the host's own module parameters never reach the comparison. Only root may do that: the
tests that call `modprobe` carry `tests.toolrun.needs_mount_namespace`; the others read the tree
(made with `depmod -b`) and run as any user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from kmodd.core.kmod.config import Config, ConfigFile, build_config
from kmodd.core.kmod.index import INDEX_FILES, RawIndexes, open_indexes
from kmodd.core.kmod.resolve import Resolver
from tests.daemon.daemon_tree import KVER, FixtureModule, write_tree

MODDIR = f"/lib/modules/{KVER}"
CONF = "etc/modprobe.d/test.conf"

#: Modules of the tree: a dependency chain (dev -> bus -> core), two modules sharing an
#: alias (in modules.order order), a module with a dash in its file name, two softdeps.
TREE_MODULES = (
    FixtureModule("kmodd_core", exports=("core_sym",)),
    FixtureModule("kmodd_bus", aliases=("kmodd:bus*",), exports=("bus_sym",),
                  needs=("core_sym",)),
    FixtureModule("kmodd_dev", aliases=("kmodd:dev*", "kmodd:shared"), needs=("bus_sym",)),
    FixtureModule("kmodd_other", aliases=("kmodd:shared",)),
    FixtureModule("kmodd_pre"),
    FixtureModule("kmodd_post"),
)
#: A module built in, with an alias of its own.
TREE_BUILTINS = {"kmodd_rtc": ("platform:rtc_cmos",)}


def make_tree(base: Path) -> Path:
    """The tree under `base`, with an empty modprobe.d and an empty command line."""
    write_tree(base, TREE_MODULES, config={CONF: ""}, builtins=TREE_BUILTINS)
    return base


def index_files(base: Path) -> dict[str, bytes | None]:
    """The five `.bin` files of the tree, None for those that are absent."""
    out: dict[str, bytes | None] = {}
    for name in INDEX_FILES.values():
        path = base / MODDIR.lstrip("/") / name
        out[name] = path.read_bytes() if path.exists() else None
    return out


def tree_config(base: Path, conf: str, cmdline: str = "") -> Config:
    """kmodd's Config of the tree's modules.softdep, `conf` (written to the tree) and
    `cmdline`, in the order kmod reads them (text as Latin-1: one character, one byte)."""
    (base / CONF).write_bytes(conf.encode("latin-1"))
    softdep = base / MODDIR.lstrip("/") / "modules.softdep"
    files = [(ConfigFile("modules.softdep", f"{MODDIR}/modules.softdep"), softdep.read_bytes()),
             (ConfigFile("test.conf", str(base / CONF)), conf.encode("latin-1"))]
    return build_config(files, cmdline.encode("latin-1"))


class TreeView:
    """SystemView of the tree: the index's module paths exist under `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def stat_errno(self, path: str) -> int:
        return 0 if (self.base / path.lstrip("/")).exists() else 2

    def cwd(self) -> str:
        return "/"


def tree_resolver(base: Path, config: Config) -> Resolver:
    bins, problems = open_indexes(MODDIR, index_files(base))
    assert problems == []
    return Resolver(RawIndexes(MODDIR, bins), config, TreeView(base))


def modprobe(base: Path, *args: str, cmdline: str = "",
             sys_module: Mapping[str, tuple[int, tuple[str, ...]]] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """The real `modprobe -d BASE -S KVER -C BASE/etc/modprobe.d ARGS`, with `cmdline` as
    /proc/cmdline (text as Latin-1, both ways) and, when given, `sys_module` (name -> use
    count and holders, each live) as /sys/module."""
    cmdline_file = base / "proc/cmdline"
    cmdline_file.write_bytes(f"{cmdline}\n".encode("latin-1"))
    mounts = 'mount --bind "$0" /proc/cmdline'
    if sys_module is not None:
        sysdir = base / "sys/module"
        shutil.rmtree(sysdir, ignore_errors=True)
        sysdir.mkdir(parents=True)
        for name, (refcnt, holders) in sys_module.items():
            (sysdir / name / "holders").mkdir(parents=True)
            (sysdir / name / "initstate").write_text("live\n")
            (sysdir / name / "refcnt").write_text(f"{refcnt}\n")
            for holder in holders:
                (sysdir / name / "holders" / holder).symlink_to(f"../../{holder}")
        mounts += f' && mount --bind "{sysdir}" /sys/module'
    argv = ["modprobe", "-d", str(base), "-S", KVER, "-C", str(base / "etc/modprobe.d"), *args]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', str(cmdline_file), *argv],
        capture_output=True, check=False, env={"PATH": os.environ["PATH"]})
    # Decoded by hand: text mode would turn a "\r\n" of the configuration into "\n".
    return subprocess.CompletedProcess(done.args, done.returncode,
                                       done.stdout.decode("latin-1"),
                                       done.stderr.decode("latin-1"))


def shown_depends(base: Path, stdout: str) -> list[str]:
    """`--show-depends` lines with the tree's module directory shown as `MODDIR`."""
    return [line.replace(f"{base}{MODDIR}", "MODDIR") for line in stdout.splitlines()]


def libkmod_messages(stderr: str) -> list[str]:
    """libkmod's messages on stderr without their prefix (`libkmod: ERROR file:line fn: `)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("libkmod: "):
            out.append(line.split(": ", 2)[2])
    return out


def lines_of(pairs: Iterable[tuple[str, str]], word: str) -> list[str]:
    return [f"{word} {key} {value}" for key, value in pairs]


def show_config(config: Config) -> list[str]:
    """What `modprobe -c` prints for a configuration, in kmod 30's order."""
    return [
        *(f"blacklist {name}" for name in config.blacklists),
        *lines_of(config.installs, "install"),
        *lines_of(config.removes, "remove"),
        *lines_of(config.aliases, "alias"),
        *lines_of(config.options, "options"),
        *(f"softdep {sd.name} {sd.text()}" for sd in config.softdeps),
    ]


def config_part(stdout: str) -> list[str]:
    """The lines `modprobe -c` prints before it dumps the indexes."""
    head = stdout.split("\n# End of configuration files. Dumping indexes now:\n", 1)[0]
    return head.split("\n")[:-1]  # each line ends in "\n"; only "\n" ends one
