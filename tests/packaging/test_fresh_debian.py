"""The README's set-up on a fresh Debian 12, as a new user meets it.

In a throw-away overlay of the cached minimal Debian 12 root (tests/packaging/freshroot.py:
python3, make and git on top of minbase), with this checkout cloned into /root/kmodd, and
chrooted, with an empty environment:

  * `make setup` installs exactly the apt packages the minimal root lacks, makes `.venv`
    from Debian's /usr/bin/python3 and pip-installs `.[test]` into it (systemd-python is
    built there); a second `make setup` installs nothing and says nothing;
  * the venv's python is Debian's 3.11 and imports the checkout's kmodd and the compiled
    `systemd._journal`; `.venv/bin/kmodctl` answers as `python -m kmodd.cli.kmodctl`;
  * `make test PYTEST_ARGS=tests/core` passes, through the same interpreter.

The root's environment is empty but for one thing of the host's site: where the host's pip
is told to find its CA bundle (PIP_CERT, for a TLS-inspecting proxy), a copy of that bundle is
the root's PIP_CERT too.

The downloads (the debs, the Debian kernel the core tests read; pip's cache directory too) are
cached next to the root, so a rerun mostly costs installing the debs and the wheels: about
two minutes (the first run: about three). It needs root, unshare,
debootstrap and the network (deb.debian.org and PyPI); without them it fails, it does not skip.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kerneltree import PINNED_PACKAGE
from tests.packaging.freshroot import (
    CHECKOUT,
    CLONE,
    REPO,
    USER_PACKAGES,
    Fresh,
    fresh_root,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Fresh]:
    with fresh_root(tmp_path) as root:
        yield root


def setup_script_packages() -> list[str]:
    text = (REPO / "scripts/setup-test-env").read_text()
    listed = re.search(r'^APT_PACKAGES="([^"]*)"', text, re.MULTILINE)
    assert listed is not None
    # The script names the pinned kernel's headers through $KVER (tests/kerneltree.py).
    kver = PINNED_PACKAGE.removeprefix("linux-image-")
    return listed.group(1).replace("$KVER", kver).split()


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def test_the_readme_setup_works_on_a_fresh_debian_12_with_debians_own_python(
        fresh: Fresh) -> None:
    packages = setup_script_packages()
    query = "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' " + " ".join(packages)

    def installed() -> set[str]:
        out = fresh.run(f"{query} 2>/dev/null || true").ok()
        return {line.split()[0] for line in out.splitlines() if line.split()[1:] == ["ii"]}

    present = installed()
    lacking = [p for p in packages if p not in present]
    assert lacking and not set(USER_PACKAGES) & set(lacking)
    assert fresh.run("/usr/bin/python3 -m pip --version").rc == 1  # Debian's python3 alone

    # The README's set-up, the first time: the clone, then everything it installs.
    first = fresh.run(f"cd {CHECKOUT} && make setup", host_step=CLONE)
    assert first.ok().splitlines() == [
        "./scripts/setup-test-env",
        "apt: " + " ".join(lacking),
        "venv: /usr/bin/python3 -m venv .venv",
        "pip: install -e .[test] into .venv",
    ]
    assert installed() == set(packages)
    assert fresh.run("/usr/bin/python3 -m pip --version").rc == 1  # nothing system-wide

    # The second time: nothing to do, nothing said.
    second = fresh.run(f"cd {CHECKOUT} && make setup")
    assert second.ok() == "./scripts/setup-test-env\n"
    assert second.seconds < 30

    # The venv is Debian's Python, with the checkout's kmodd and a compiled systemd.journal.
    probe = fresh.run(
        f"cd /tmp && {CHECKOUT}/.venv/bin/python -c '"
        "import sys, kmodd, systemd.journal, systemd._journal as j; "
        "print(sys.base_prefix, sys.prefix, sys.version_info[:2], kmodd.__file__, j.__file__, "
        "sep=chr(10))'").ok()
    assert probe.splitlines() == [
        "/usr", f"{CHECKOUT}/.venv", "(3, 11)", f"{CHECKOUT}/kmodd/__init__.py",
        f"{CHECKOUT}/.venv/lib/python3.11/site-packages/systemd/"
        "_journal.cpython-311-x86_64-linux-gnu.so",
    ]
    version = fresh.run(f"cd {CHECKOUT} && .venv/bin/kmodctl --version").ok()
    module = fresh.run(f"cd {CHECKOUT} && .venv/bin/python -m kmodd.cli.kmodctl --version").ok()
    assert version == module == f"kmodctl {project_version()}\n"

    # The README's test command through the same interpreter, on the pure-logic tests.
    tests = fresh.run(f"cd {CHECKOUT} && make test PYTEST_ARGS='-p no:cacheprovider tests/core'")
    out = tests.ok()
    assert out.startswith("./scripts/setup-test-env\n"
                          ".venv/bin/python -m pytest -q -p no:cacheprovider tests/core\n"), out
    summary = out.rstrip("\n").rsplit("\n", 1)[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \(\d+:\d+:\d+\))?", summary), out
    print(f"first setup {first.seconds:.0f} s, second {second.seconds:.1f} s, "
          f"tests/core {tests.seconds:.0f} s: {summary}", file=sys.stderr)
