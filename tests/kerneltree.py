"""The real Debian kernel tree the differential tests run against.

`debian_kernel_tree()` downloads the pinned Debian kernel package (PINNED_PACKAGE, or
`$KMODD_KERNEL_PACKAGE`) with `apt-get download`, unpacks it with `dpkg-deb -x` and runs the
real `depmod -b` on it, all
cached under `$KMODD_TEST_CACHE` (default `/var/cache/kmodd-test`), so that a second call
costs a few stat() calls. Run as a script it prints the tree's root, version and module dir.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

CACHE = os.environ.get("KMODD_TEST_CACHE", "/var/cache/kmodd-test")


@dataclass(frozen=True)
class KernelTree:
    root: str  # the -d/-b basedir
    kver: str  # e.g. 6.1.0-56-amd64
    package: str

    @property
    def moddir(self) -> str:
        return f"{self.root}/lib/modules/{self.kver}"


#: The kernel every differential and end-to-end test runs against. Pinned, not the package
#: `linux-image-amd64` depends on today: that moves with each point release, and the
#: references recorded from a real boot (tests/data/qemu/) would silently stop applying. The
#: archive keeps the previous ABI's package when a new one arrives; move the pin together
#: with the recordings (`python3 bench/e2e_loaders.py coldplug --record`).
PINNED_PACKAGE = "linux-image-6.1.0-56-amd64"


def _image_package() -> str:
    return os.environ.get("KMODD_KERNEL_PACKAGE") or PINNED_PACKAGE


def debian_kernel_tree() -> KernelTree:
    """Download (once), unpack (once) and depmod (once) the Debian kernel; return where it is."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        package = _image_package()
        kver = package.removeprefix("linux-image-")
        tree = KernelTree(root=os.path.join(CACHE, package), kver=kver, package=package)
        done = os.path.join(tree.root, ".complete")
        if os.path.exists(done):
            return tree
        debs = glob.glob(os.path.join(CACHE, f"{package}_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", package], cwd=CACHE, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            debs = glob.glob(os.path.join(CACHE, f"{package}_*.deb"))
        shutil.rmtree(tree.root, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", debs[0], tree.root], check=True)
        subprocess.run(["depmod", "-b", tree.root, kver], check=True)
        with open(done, "w") as f:
            f.write(debs[0] + "\n")
        return tree


if __name__ == "__main__":
    t = debian_kernel_tree()
    print(t.root, t.kver, t.moddir, sep="\n")
    sys.exit(0)
