"""Build the tiny C test modules against Debian's linux-headers, once, into a cache.

`built_modules()` returns {name: path of the .ko}. The build runs kbuild from the installed
`linux-headers-<kver>` (scripts/setup-test-env installs the pinned kernel's) into
`$KMODD_TEST_CACHE/modules-<kver>-<hash of the sources>`, so a second call costs a stat.
As a script it builds and prints the paths.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("KMODD_TEST_CACHE", "/var/cache/kmodd-test")
SOURCES = ("Kbuild", "kmodd_dep.c", "kmodd_user.c", "kmodd_nodev.c")
NAMES = ("kmodd_dep", "kmodd_user", "kmodd_nodev")


def headers() -> tuple[str, str] | None:
    """(kver, kbuild dir) of an installed linux-headers package, or None."""
    for build in sorted(glob.glob("/usr/src/linux-headers-*-amd64")):
        kver = os.path.basename(build).removeprefix("linux-headers-")
        if os.path.exists(os.path.join(build, "Module.symvers")):
            return kver, build
    return None


def module_symvers() -> str | None:
    """The headers' Module.symvers: every symbol the kernel exports, with its CRC."""
    found = headers()
    return None if found is None else os.path.join(found[1], "Module.symvers")


def built_modules() -> dict[str, str]:
    found = headers()
    if found is None:
        raise RuntimeError("no linux-headers-*-amd64 installed (run scripts/setup-test-env)")
    kver, build = found
    digest = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(f.read())
    out = os.path.join(CACHE, f"modules-{kver}-{digest.hexdigest()[:12]}")
    result = {name: os.path.join(out, f"{name}.ko") for name in NAMES}
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".modules.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(os.path.exists(p) for p in result.values()):
            return result
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for name in SOURCES:
            shutil.copy(os.path.join(HERE, name), out)
        subprocess.run(["make", "-s", "-C", build, f"M={out}", "modules"], check=True,
                       capture_output=True)
    return result


if __name__ == "__main__":
    for name, path in built_modules().items():
        print(name, path)
    sys.exit(0)
