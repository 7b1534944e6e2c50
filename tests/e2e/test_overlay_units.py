"""The overlay installs kmodd as the Debian package does: units enabled, the daemon where its
unit starts it, udev's module-loading rules hidden (no QEMU needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.vm import image, manager

UNIT_DIR = image.UNIT_DIR


def _links(root: Path) -> dict[str, str]:
    top = root / image.LOCAL_UNIT_DIR
    return {str(p.relative_to(top)): os.readlink(p) for p in sorted(top.rglob("*"))
            if p.is_symlink()}


def _write_unit(root: Path, name: str, text: str) -> None:
    (root / UNIT_DIR).mkdir(parents=True, exist_ok=True)
    (root / UNIT_DIR / name).write_text(text)


def test_enable_makes_the_install_sections_links_and_follows_also(tmp_path: Path) -> None:
    _write_unit(tmp_path, "a.service", "[Service]\nExecStart=/a\n[Install]\n"
                "WantedBy=sysinit.target multi-user.target\nAlias=b.service\nAlso=a.socket\n")
    _write_unit(tmp_path, "a.socket", "[Socket]\nListenStream=/run/a\n[Install]\n"
                "RequiredBy=sockets.target\nAlso=a.service\n")
    image.enable_unit(str(tmp_path), UNIT_DIR, "a.service")
    assert _links(tmp_path) == {
        "sysinit.target.wants/a.service": f"/{UNIT_DIR}/a.service",
        "multi-user.target.wants/a.service": f"/{UNIT_DIR}/a.service",
        "b.service": f"/{UNIT_DIR}/a.service",
        "sockets.target.requires/a.socket": f"/{UNIT_DIR}/a.socket",
    }


def test_enable_rejects_an_install_key_it_cannot_honour(tmp_path: Path) -> None:
    _write_unit(tmp_path, "a.service", "[Install]\nDefaultInstance=x\n")
    with pytest.raises(ValueError, match=r"a.service:2: \[Install\] DefaultInstance="):
        image.enable_unit(str(tmp_path), UNIT_DIR, "a.service")


def test_overlay_enables_kmodds_units_as_the_postinst_does_and_the_test_agent(
        tmp_path: Path) -> None:
    assert image._install_units(image.CHECKOUT, str(tmp_path)) is True
    assert _links(tmp_path) == {
        "sysinit.target.wants/kmodd.service": f"/{UNIT_DIR}/kmodd.service",
        "sockets.target.wants/kmodd.socket": f"/{UNIT_DIR}/kmodd.socket",
        "sockets.target.wants/kmodd-kernel.socket": f"/{UNIT_DIR}/kmodd-kernel.socket",
        "sysinit.target.wants/kmodd-test-agent.service":
            f"/{image.LOCAL_UNIT_DIR}/kmodd-test-agent.service",
    }
    shipped = sorted(os.listdir(os.path.join(image.CHECKOUT, image.UNITS_SOURCE)))
    assert sorted(os.listdir(tmp_path / UNIT_DIR)) == shipped


def test_overlay_without_kmodd_enables_only_the_test_agent(tmp_path: Path) -> None:
    assert image._install_units(image.CHECKOUT, str(tmp_path), kmodd=False) is False
    assert _links(tmp_path) == {
        "sysinit.target.wants/kmodd-test-agent.service":
            f"/{image.LOCAL_UNIT_DIR}/kmodd-test-agent.service"}


def test_overlay_puts_the_daemon_where_its_unit_starts_it_like_the_package() -> None:
    assert image.script_dirs(image.CHECKOUT) == {"kmodd": "usr/sbin"}


def test_overlay_hides_exactly_the_udev_rules_the_package_diverts(tmp_path: Path) -> None:
    assert image.diverted_udev_rules(image.CHECKOUT) == ["80-drivers.rules",
                                                          "80-debian-compat.rules"]
    image._install_udev_rules(image.CHECKOUT, str(tmp_path))
    masks = tmp_path / image.UDEV_MASK_DIR
    assert sorted(p.name for p in masks.iterdir()) == ["80-debian-compat.rules",
                                                        "80-drivers.rules"]
    # The package's own 80-debian-compat.rules; 80-drivers.rules has no rule at all.
    assert (masks / "80-debian-compat.rules").read_text() == \
        (Path(image.CHECKOUT) / "debian/kmodd.debian-compat.udev").read_text()
    drivers = (masks / "80-drivers.rules").read_text()
    assert [line for line in drivers.splitlines() if not line.startswith("#")] == []
    # What the udev anchor removes to get udev as shipped (guest/coldplug.py's KMODD_MARK).
    for mask in masks.iterdir():
        assert mask.read_text().startswith(image.UDEV_MASK_MARK)


def test_capability_mask_of_kmodds_bounding_set() -> None:
    assert manager.capability_mask("CAP_SYS_MODULE CAP_NET_ADMIN CAP_SYSLOG") == \
        (1 << 16) | (1 << 12) | (1 << 34)


def test_sizes_use_systemds_base_1024_suffixes() -> None:
    assert [manager.parse_size(v) for v in ("160M", "96M", "4096", "1G")] == \
        [160 << 20, 96 << 20, 4096, 1 << 30]
