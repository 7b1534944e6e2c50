"""Fixtures of the end-to-end tests: the guest image, and what decides whether they can run.

The e2e tests need root (debootstrap, chroot), QEMU and debootstrap
(`scripts/setup-test-env` installs them) and network access to Debian and PyPI for the first
image build; without those they are skipped with the reason. A booted VM is shared by the
tests of one module (module-scoped fixtures in the test files); never two at once.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.e2e.vm import image


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "e2e tests build a debootstrap image and need root"
    for tool in ("qemu-system-x86_64", "debootstrap", "apt-get", "dpkg-deb", "depmod"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run scripts/setup-test-env)"
    return None


@pytest.fixture(scope="session")
def guest() -> image.Guest:
    """The bootable guest (built once, then reused from /var/cache/kmodd-e2e)."""
    why = _missing()
    if why:
        pytest.skip(why)
    return image.build()
