"""The autoload policy file against the real modprobe (kmod 30): `install ALIAS /bin/false`
refuses the alias and nothing else, because libkmod tries an install command of the exact
name before modules.alias, and the module's own name before install commands."""

from __future__ import annotations

from pathlib import Path

from kmodd.core.autoload.ktrace import policy_text
from tests.core.kmod.realkmod import CONF, MODDIR, make_tree, modprobe, tree_config, tree_resolver


def _insmod(base: Path, name: str) -> str:
    return f"insmod {base}{MODDIR}/kernel/drivers/kmodd/{name}.ko \n"


def test_a_denied_alias_runs_false_the_modules_own_name_still_loads(tmp_path: Path) -> None:
    base = make_tree(tmp_path)
    (base / CONF).write_text(policy_text(("kmodd:shared",)))
    assert modprobe(base, "-n", "-v", "kmodd:shared").stdout == "install /bin/false \n"
    assert modprobe(base, "-n", "-v", "kmodd_other").stdout == _insmod(base, "kmodd-other")
    refused = modprobe(base, "-q", "kmodd:shared")
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", "")


def test_an_alias_not_denied_resolves_as_without_the_policy(tmp_path: Path) -> None:
    base = make_tree(tmp_path)
    (base / CONF).write_text(policy_text(("kmodd:shared",)))
    assert modprobe(base, "-n", "-v", "kmodd:bus1").stdout == (
        _insmod(base, "kmodd-core") + _insmod(base, "kmodd-bus"))


def test_an_admins_alias_line_wins_over_the_policy(tmp_path: Path) -> None:
    base = make_tree(tmp_path)
    (base / CONF).write_text("alias kmodd:shared kmodd_other\n"
                             + policy_text(("kmodd:shared",)))
    assert modprobe(base, "-n", "-v", "kmodd:shared").stdout == _insmod(base, "kmodd-other")


def test_kmodds_resolver_agrees_the_denied_alias_is_an_install_command(tmp_path: Path) -> None:
    base = make_tree(tmp_path)
    resolver = tree_resolver(base, tree_config(base, policy_text(("kmodd:shared",))))
    found = resolver.lookup("kmodd:shared")
    assert (resolver.last_source, [m.name for m in found]) == ("install-command",
                                                               ["kmodd:shared"])
    resolver.lookup("kmodd_other")
    assert resolver.last_source == "modules.dep"
