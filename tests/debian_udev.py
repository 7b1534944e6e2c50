"""Debian 12's udev rules files, for tests that check kmodd against them.

Uses `/lib/udev/rules.d` when udev is installed; otherwise downloads the `udev` package once
with `apt-get download` and unpacks it with `dpkg-deb -x` under `$KMODD_TEST_CACHE`
(default `/var/cache/kmodd-test`), without installing it (an installed udevd would load
modules itself).
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess

CACHE = os.environ.get("KMODD_TEST_CACHE", "/var/cache/kmodd-test")
SYSTEM_RULES = "/lib/udev/rules.d"


def udev_rules_dir() -> str:
    """A directory holding Debian 12 udev's own rules files (80-drivers.rules among them)."""
    if os.path.exists(os.path.join(SYSTEM_RULES, "80-drivers.rules")):
        return SYSTEM_RULES
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tree = os.path.join(CACHE, "udev")
        rules = os.path.join(tree, "lib", "udev", "rules.d")
        if os.path.exists(os.path.join(tree, ".complete")):
            return rules
        debs = glob.glob(os.path.join(CACHE, "udev_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", "udev"], cwd=CACHE, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            debs = glob.glob(os.path.join(CACHE, "udev_*.deb"))
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", debs[0], tree], check=True)
        with open(os.path.join(tree, ".complete"), "w") as f:
            f.write(debs[0] + "\n")
        return rules
