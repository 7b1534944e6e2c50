"""catalog/kmodd.catalog: one entry per MESSAGE_ID of `core.autoload.messages`, read by
journalctl."""

from __future__ import annotations

import errno as E
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kmodd.core.autoload.messages import FAILURE_MESSAGES, MESSAGE_IDS, OUTCOME_MESSAGES, Message
from kmodd.core.autoload.outcome import INSERT_CAUSES, Outcome, classify_insert

CATALOG = Path(__file__).resolve().parents[2] / "catalog/kmodd.catalog"
HEADERS = ("Subject", "Defined-By", "Support", "Documentation")


def entries() -> dict[str, tuple[dict[str, str], str]]:
    """id -> (header fields, body) of every entry, as journalctl's catalog parser reads it."""
    found: dict[str, tuple[dict[str, str], str]] = {}
    lines = [ln for ln in CATALOG.read_text().splitlines() if not ln.startswith("#")]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("-- ")]
    for n, start in enumerate(starts):
        block = lines[start + 1:starts[n + 1] if n + 1 < len(starts) else len(lines)]
        blank = block.index("")
        headers = dict(ln.split(": ", 1) for ln in block[:blank])
        message_id = lines[start][3:]
        assert message_id not in found, message_id
        found[message_id] = (headers, "\n".join(block[blank + 1:]).strip())
    return found


def test_every_kind_has_its_own_fixed_128_bit_id() -> None:
    assert set(MESSAGE_IDS) == set(Message)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in MESSAGE_IDS.values())
    assert len(set(MESSAGE_IDS.values())) == len(Message)


def test_the_catalog_has_exactly_one_entry_per_id_with_every_header() -> None:
    catalog = entries()
    assert sorted(catalog) == sorted(MESSAGE_IDS.values())
    for message_id, (headers, body) in catalog.items():
        assert list(headers) == list(HEADERS), message_id
        assert headers["Defined-By"] == "kmodd"
        assert headers["Documentation"].startswith("man:kmodd(8)")
        assert body, message_id


def test_every_outcome_and_every_cause_of_a_failed_insert_has_its_kind() -> None:
    assert set(OUTCOME_MESSAGES) == set(Outcome)
    # Every errno's cause, an errno no table names (init-failed), and a declining init.
    diagnoses = [classify_insert(e) for e in INSERT_CAUSES]
    diagnoses += [classify_insert(E.EPROTO), classify_insert(E.EEXIST, declined=True)]
    assert set(FAILURE_MESSAGES) == {d.cause for d in diagnoses if not d.ok}


def test_the_failure_texts_quote_the_records_module_and_errno() -> None:
    catalog = entries()
    for message in FAILURE_MESSAGES.values():
        headers, body = catalog[MESSAGE_IDS[message]]
        assert "@KMODD_MODULE@" in headers["Subject"] + body, message
    unknown_symbol = catalog[MESSAGE_IDS[Message.FAILED_UNKNOWN_SYMBOL]][1]
    assert "ERRNO=@ERRNO@" in unknown_symbol
    assert "`kmodctl explain @KMODD_MODULE@`" in unknown_symbol


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="needs journalctl")
def test_journalctl_builds_its_catalog_database_from_the_installed_file(tmp_path: Path) -> None:
    """The file installed as a package installs it; the database journalctl -x reads."""
    installed = tmp_path / "usr/lib/systemd/catalog/kmodd.catalog"
    installed.parent.mkdir(parents=True)
    shutil.copy(CATALOG, installed)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True,
                   timeout=60)
    assert (tmp_path / "var/lib/systemd/catalog/database").is_file()
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"],
                            check=True, capture_output=True, text=True, timeout=60).stdout
    catalog = entries()
    assert listed == "".join(f"{i} kmodd: {catalog[i][0]['Subject']}\n" for i in sorted(catalog))
    bad_format = MESSAGE_IDS[Message.FAILED_BAD_FORMAT]
    dumped = subprocess.run(["journalctl", f"--root={tmp_path}", "--dump-catalog", bad_format],
                            check=True, capture_output=True, text=True, timeout=60).stdout
    headers, body = catalog[bad_format]
    assert dumped == (f"-- {bad_format}\n"
                      + "".join(f"{k}: {v}\n" for k, v in headers.items())
                      + f"\n{body}\n\n")
