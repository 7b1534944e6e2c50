"""pyproject.toml's runtime dependencies are exactly what kmodd imports at run time.

kmodd reads netlink (kmodd/system/netlink.py), ELF (kmodd/core/modfile/elf.py) and udev's
database (kmodd/system/sysfs.py) itself, so pyroute2, pyelftools and pyudev are no runtime
dependency: they are the references the tests and benchmarks compare kmodd with, and stay in the
`test` and `bench` extras. The Debian package's Depends follow from [project].dependencies
(dh_python3), so nothing else reaches an installed system.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Import name -> distribution name, for the third-party modules kmodd imports.
DISTRIBUTIONS = {"zstandard": "zstandard", "systemd": "systemd-python"}
# Imported by name at run time (importlib), where ast sees no import statement.
DYNAMIC_IMPORTS = {"kmodd/system/journal.py": "systemd"}
REFERENCES = {"pyroute2", "pyelftools", "pyudev"}


def project() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return table


def names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    found = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match is not None, requirement
        found.add(match.group(0).lower())
    return found


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> the kmodd files that import it (not stdlib, not kmodd)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "kmodd").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        tops = set()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                tops |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
        if rel in DYNAMIC_IMPORTS:
            tops.add(DYNAMIC_IMPORTS[rel])
        for top in tops - set(sys.stdlib_module_names) - {"kmodd", "__future__"}:
            found.setdefault(top, set()).add(rel)
    return found


def test_kmodd_imports_only_zstandard_and_optionally_systemd_python() -> None:
    assert set(third_party_imports()) == set(DISTRIBUTIONS)


def test_the_runtime_dependencies_are_what_kmodd_imports_but_the_optional_journal() -> None:
    imported = {DISTRIBUTIONS[name] for name in third_party_imports()}
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert names(extras["journal"]) == {"systemd-python"}
    assert names(project()["dependencies"]) == imported - {"systemd-python"}


def test_pyroute2_pyelftools_and_pyudev_are_for_the_tests_only() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert not REFERENCES & names(project()["dependencies"])
    assert names(extras["test"]) >= REFERENCES
    assert names(extras["bench"]) >= REFERENCES - {"pyudev"}  # no benchmark reads udev's data
