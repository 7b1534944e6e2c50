"""The overlay installs and enables units as the Debian package does (no QEMU needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vm import image, manager

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


def test_capability_mask_of_kmodds_bounding_set() -> None:
    assert manager.capability_mask("CAP_SYS_MODULE CAP_NET_ADMIN CAP_SYSLOG") == \
        (1 << 16) | (1 << 12) | (1 << 34)


def test_sizes_use_systemds_base_1024_suffixes() -> None:
    assert [manager.parse_size(v) for v in ("160M", "96M", "4096", "1G")] == \
        [160 << 20, 96 << 20, 4096, 1 << 30]
