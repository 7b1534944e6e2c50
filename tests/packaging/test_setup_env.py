"""scripts/setup-test-env and the Makefile around it, on this machine (after `make setup`).

What it does on a fresh Debian 12 is tests/packaging/test_fresh_debian.py's business; these
are the quick checks: the venv every target runs, and a venv it must not take for its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/setup-test-env"


def make_dry_run(target: str, *assignments: str) -> list[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VENV", "PYTHON", "PYTEST_ARGS", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "-s", "-n", "-C", str(REPO), target, *assignments],
                         capture_output=True, text=True, env=env, check=True, timeout=60)
    return out.stdout.splitlines()


def test_every_make_target_runs_the_venv_python() -> None:
    assert make_dry_run("test") == ["./scripts/setup-test-env", ".venv/bin/python -m pytest -q "]
    assert make_dry_run("test", "PYTEST_ARGS=-x tests/core") == [
        "./scripts/setup-test-env", ".venv/bin/python -m pytest -q -x tests/core"]
    assert make_dry_run("lint") == [
        "./scripts/setup-test-env",
        ".venv/bin/python -m ruff check kmodd tests bench",
        ".venv/bin/python -m mypy",
        "MYPYPATH=tests/e2e/vm/guest .venv/bin/python -m mypy tests/e2e/vm/guest/agent.py "
        "tests/e2e/vm/guest/coldplug.py",
    ]
    assert make_dry_run("deb") == ["./scripts/setup-test-env", "packaging/build-deb"]
    assert make_dry_run("demo", "DEMO_ARGS=--set rich") == [
        "./scripts/setup-test-env", ".venv/bin/python tests/e2e/vm demo --set rich"]


def test_the_venv_bin_comes_first_on_the_path_of_every_target() -> None:
    path = subprocess.run(["make", "-s", "-C", str(REPO), "--eval", "show:; @echo $$PATH",
                           "show"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
    assert path.split(":")[0] == str(REPO / ".venv/bin")


def test_the_suite_runs_in_the_venv_made_from_debians_python() -> None:
    """Run by `make test`, this interpreter is $VENV's (.venv), made from /usr/bin/python3."""
    venv = REPO / os.environ.get("VENV", ".venv")
    assert Path(sys.prefix) == venv, f"run the suite with `make test`, not {sys.executable}"
    assert sys.base_prefix == "/usr"
    assert (venv / "pyvenv.cfg").read_text().splitlines()[0] == "home = /usr/bin"


def test_a_venv_of_another_python_is_refused_not_reused_or_removed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /opt/other/bin\ninclude-system-site-packages = "
                                     "false\n")
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, VENV=str(venv)))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"setup-test-env: {venv} is not a working venv of /usr/bin/python3 (its home is "
        "'/opt/other/bin'); remove it and run make setup again\n")
    assert sorted(p.name for p in venv.iterdir()) == ["pyvenv.cfg"]


def test_a_second_setup_installs_nothing_and_says_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VENV"}
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
