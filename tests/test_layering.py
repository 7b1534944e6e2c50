"""The architecture's one rule, checked: `kmodd/core` is pure.

Core modules may import only the standard library and other core modules, and nothing of the
standard library that touches the system (files, sockets, processes, the clock, the
environment). Everything else lives in `kmodd/system`, `kmodd/daemon` or `kmodd/cli`.
"""

from __future__ import annotations

import ast
import os
import sys

import pytest

CORE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kmodd", "core")

#: Standard-library modules a core module must not import: they reach the system.
SYSTEM_MODULES = {
    "socket", "subprocess", "select", "selectors", "asyncio", "signal", "ctypes",
    "shutil", "tempfile", "glob", "pathlib", "io", "fcntl", "termios", "pwd", "grp",
    "time", "datetime", "threading", "multiprocessing", "concurrent", "urllib", "http",
    "logging", "syslog", "platform", "sysconfig", "importlib", "sqlite3",
}
#: From `os` only these pure helpers may be used.
OS_ALLOWED = {"strerror", "path"}
#: `mmap` may be named (module data often arrives as a mapping) but never called.


def _core_files() -> list[str]:
    return sorted(os.path.join(CORE, f) for f in os.listdir(CORE) if f.endswith(".py"))


@pytest.mark.parametrize("path", _core_files(), ids=os.path.basename)
def test_core_module_imports_only_pure_standard_library(path: str) -> None:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if name.startswith("kmodd.core") or name == "__future__":
                continue
            if top == "kmodd":
                problems.append(f"line {node.lineno}: imports {name} (outside kmodd.core)")
            elif top not in stdlib:
                problems.append(f"line {node.lineno}: imports third-party {name}")
            elif top in SYSTEM_MODULES:
                problems.append(f"line {node.lineno}: imports {name}, which reaches the system")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "os" and node.attr not in OS_ALLOWED):
            problems.append(f"line {node.lineno}: uses os.{node.attr}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
                and (getattr(node.func, "id", None) == "mmap"
                     or getattr(node.func, "attr", None) == "mmap")):
            problems.append(f"line {node.lineno}: maps a file (mmap)")
    assert problems == []
