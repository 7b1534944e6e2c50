"""The README's set-up on a fresh Debian 12, as a new user meets it.

A minimal bookworm root (`debootstrap --variant=minbase`, the archive areas of an installed
Debian 12 (bookworm, -updates, -security), then `apt-get install python3 make git`, nothing
else) is cached under $KMODD_FRESH_CACHE (default /var/cache/kmodd-fresh). Each
run boots a throw-away overlay of it in a private mount namespace (/proc, /sys and /dev bound
in), clones this checkout into /root/kmodd (with the working tree's uncommitted and untracked
files copied over the clone, so what is tested is what is here) and, chrooted, with an empty
environment:

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

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kerneltree import PINNED_PACKAGE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KMODD_FRESH_CACHE", "/var/cache/kmodd-fresh"))
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# What the new user starts from, on top of minbase.
USER_PACKAGES = ("python3", "make", "git")
# Bump to rebuild the cached root.
BASE_VERSION = "2"
# The archive areas of an installed Debian 12 (the installer's and the debian:bookworm image's;
# debootstrap alone gives only the first). The kernel the tests pin is in bookworm-security.
SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
BASE = CACHE / f"base-{BASE_VERSION}"
CHECKOUT = "/root/kmodd"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Cached across runs, bound into every root: (directory under CACHE, path in the root).
SHARED = (("apt-archives", "/var/cache/apt/archives"), ("pip", "/root/.cache/pip"),
          ("kmodd-test", "/var/cache/kmodd-test"))

# Runs in a private mount namespace: every mount goes away with it.
ENTER = r"""
set -eu
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT"
mount --bind /proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
set -- $SHARED
while [ $# -gt 0 ]; do
    mkdir -p "$CACHE/$1" "$ROOT$2"
    mount --bind "$CACHE/$1" "$ROOT$2"
    shift 2
done
mkdir -p "$ROOT/var/cache/apt/archives/partial"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
site=""
if [ -n "$HOST_PIP_CERT" ]; then
    cp "$HOST_PIP_CERT" "$ROOT/etc/pip-site-cert.pem"
    site="PIP_CERT=/etc/pip-site-cert.pem"
fi
if [ -n "$HOST_STEP" ]; then
    sh -euc "$HOST_STEP"
fi
exec chroot "$ROOT" /usr/bin/env -i HOME=/root PATH="$CHROOT_PATH" LANG=C.UTF-8 TERM=dumb \
    $site /bin/sh -euc "$STEP"
"""

# On the host, inside the namespace: the clone, then the working tree over it.
CLONE = r"""
git clone -q "$REPO" "$ROOT$CHECKOUT"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) \
    | tar -xf - -C "$ROOT$CHECKOUT"
git -C "$REPO" ls-files -z --deleted | (cd "$ROOT$CHECKOUT" && xargs -0 -r rm -f --)
"""


@dataclass(frozen=True)
class Fresh:
    run_dir: Path  # upper, work and the mount point of the merged root

    def run(self, step: str, host_step: str = "", timeout: float = 1800) -> Result:
        env = {"PATH": os.environ.get("PATH", CHROOT_PATH), "BASE": str(BASE),
               "RUN": str(self.run_dir), "ROOT": str(self.run_dir / "root"),
               "CACHE": str(CACHE), "SHARED": " ".join(f"{d} {p}" for d, p in SHARED),
               "CHROOT_PATH": CHROOT_PATH, "REPO": str(REPO), "CHECKOUT": CHECKOUT,
               "HOST_STEP": host_step, "STEP": step,
               "HOST_PIP_CERT": os.environ.get("PIP_CERT", "")}
        start = time.monotonic()
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", ENTER],
                              env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - start
        print(f"[{seconds:6.1f} s] {step}", file=sys.stderr)
        return Result(proc.returncode, proc.stdout, proc.stderr, seconds)


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def ok(self) -> str:
        assert self.rc == 0, f"exit {self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        return self.stdout


def require(condition: bool, what: str) -> None:
    """This test fails, loudly, where it cannot run."""
    if not condition:
        pytest.fail(f"the fresh Debian 12 test cannot run here: {what}", pytrace=False)


def build_base() -> None:
    """debootstrap minbase + USER_PACKAGES into BASE, once (a half-built root is discarded)."""
    if (BASE / ".complete").exists():
        return
    tmp = CACHE / f"base-{BASE_VERSION}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    debs = CACHE / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(tmp),
                    MIRROR], check=True, capture_output=True, timeout=1800)
    # A chroot has no init: packages' maintainer scripts must not start services in it.
    policy = tmp / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copy("/etc/resolv.conf", tmp / "etc/resolv.conf")
    (tmp / "etc/apt/sources.list").unlink()
    (tmp / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
    env = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *USER_PACKAGES],
                 ["apt-get", "clean"]):
        subprocess.run(["chroot", str(tmp), *argv], env=env, check=True, capture_output=True,
                       timeout=1800)
    (tmp / ".complete").write_text(f"{SUITE} minbase + {' '.join(USER_PACKAGES)}\n")
    shutil.rmtree(BASE, ignore_errors=True)
    tmp.rename(BASE)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Fresh]:
    require(os.geteuid() == 0, "it needs root (debootstrap, mount, chroot)")
    for tool in ("debootstrap", "unshare", "chroot", "git", "tar"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require((REPO / ".git").exists(), f"{REPO} is not a git checkout")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fresh root at a time shares the caches
        start = time.monotonic()
        build_base()
        print(f"[{time.monotonic() - start:6.1f} s] cached root {BASE}", file=sys.stderr)
        for name in ("upper", "work", "root"):
            (tmp_path / name).mkdir()
        try:
            yield Fresh(tmp_path)
        finally:
            # The overlay's upper directory holds root-owned files of the whole install.
            shutil.rmtree(tmp_path / "upper", ignore_errors=True)
            shutil.rmtree(tmp_path / "work", ignore_errors=True)


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
