"""Skip decisions shared by the e2e test modules."""

from __future__ import annotations

import pytest

from tests.e2e.vm import image
from tests.e2e.vm.loaders import LOADERS, Loader
from tests.e2e.vm.machine import VM


def loader_or_skip(vm: VM, name: str) -> Loader:
    """The loader `name` for this guest, or skip the test with the guest's reason."""
    loader = LOADERS[name]
    why = loader.unavailable(vm)
    if why:
        pytest.skip(why)
    return loader


def skip_kmodd_without_unit(guest: image.Guest) -> None:
    """Skip before booting when the overlay cannot contain kmodd's unit at all.

    (Whether kmodd is importable and its ExecStart runnable is then checked in the guest.)
    """
    if not guest.overlay.has_unit:
        pytest.skip(f"the checkout has no {image.UNIT_SOURCE}: kmodd cannot be started as "
                    "systemd would start it")
