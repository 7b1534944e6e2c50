"""A throw-away Debian 12 root to run a step in, as root, chrooted: what the packaging tests
stand on.

A minimal bookworm root (`debootstrap --variant=minbase`, the archive areas of an installed
Debian 12 (bookworm, -updates, -security), then `apt-get install python3 make git`, nothing
else) is cached under $KMODD_FRESH_CACHE (default /var/cache/kmodd-fresh). `fresh_root()`
gives an overlay of it: each `Fresh.run(step)` enters a private mount namespace, mounts the
overlay (what a step writes stays in the run's upper directory, and the next step sees it),
binds /proc, /sys and /dev in, and runs the step chrooted with an empty environment. The
downloads (apt's archives, pip's cache, the Debian kernel the core tests read) are cached
next to the root and bound into every one. `CLONE`, run as a host step, clones this checkout
into /root/kmodd with the working tree's uncommitted and untracked files copied over the
clone, so what is tested is what is here.

It needs root, unshare, debootstrap and the network (deb.debian.org and PyPI); without them
the tests that use it fail, they do not skip.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@contextmanager
def fresh_root(run_dir: Path) -> Iterator[Fresh]:
    """An overlay of the cached root in run_dir (built first if need be), for the block's time.

    One fresh root at a time: the caches are shared, so the block holds a lock on them.
    """
    require(os.geteuid() == 0, "it needs root (debootstrap, mount, chroot)")
    for tool in ("debootstrap", "unshare", "chroot", "git", "tar"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require((REPO / ".git").exists(), f"{REPO} is not a git checkout")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = time.monotonic()
        build_base()
        print(f"[{time.monotonic() - start:6.1f} s] cached root {BASE}", file=sys.stderr)
        for name in ("upper", "work", "root"):
            (run_dir / name).mkdir(parents=True)
        try:
            yield Fresh(run_dir)
        finally:
            # The overlay's upper directory holds root-owned files of the whole install.
            shutil.rmtree(run_dir / "upper", ignore_errors=True)
            shutil.rmtree(run_dir / "work", ignore_errors=True)
