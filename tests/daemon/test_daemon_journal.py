"""The daemon's outcome records in a real systemd-journald, read back with `journalctl -o json`.

Inside `unshare -m`, with a private /run and /var/log, the test starts journald, runs the
daemon (`kmodd_on_fake_kernel.py`, `--log-target=journal`) over a test root whose fake sysfs
it coldplugs, stops it, and reads every kmodd record back: one per outcome, with the fields,
each with the MESSAGE_ID of its kind and the code that logged it; and `journalctl -x` explains
a failure from the catalog (built with `journalctl --root` and mounted, in the namespace only,
where journalctl reads its catalog database).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kmodd.core.autoload.messages import MESSAGE_IDS, Message
from tests.daemon.daemon_tree import MACHINE_MODULES, FixtureModule, write_sysfs, write_tree

JOURNALD = "/lib/systemd/systemd-journald"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WRAPPER = HERE / "kmodd_on_fake_kernel.py"
FIELDS = ",".join(("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "KMODD_MODULE", "KMODD_MODALIAS",
                   "KMODD_DEVPATH", "KMODD_SEQNUM", "ERRNO", "KMODD_OUTCOME",
                   "KMODD_DURATION_USEC", "KMODD_DIAGNOSIS", "MESSAGE_ID", "CODE_FILE",
                   "CODE_LINE", "CODE_FUNC"))
CATALOG = REPO / "catalog/kmodd.catalog"
BAD_FORMAT_ID = MESSAGE_IDS[Message.FAILED_BAD_FORMAT]
#: The device without a driver in the fake sysfs gets one whose version magic is wrong.
BAD = FixtureModule("kmodd_bad_magic", aliases=("platform:kmodd-nodriver",),
                    modinfo=("vermagic=4.19.0 SMP mod_unload ",))

SCENARIO = textwrap.dedent(f"""
    set -eu
    BASE=$1
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /var/log
    mkdir -p /run/systemd/journal /run/log/journal $BASE/catroot/usr/lib/systemd/catalog
    cp {CATALOG} $BASE/catroot/usr/lib/systemd/catalog/
    journalctl --root=$BASE/catroot --update-catalog
    mount --bind $BASE/catroot/var/lib/systemd/catalog /var/lib/systemd/catalog
    {JOURNALD} </dev/null >/dev/null 2>&1 &
    JPID=$!
    trap 'kill $JPID' EXIT
    for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
    export PYTHONPATH={REPO}
    {sys.executable} {WRAPPER} --root=$BASE --log-target=journal --log-level=debug \\
        2>$BASE/stderr &
    KPID=$!
    for i in $(seq 600); do
        {sys.executable} -m kmodd.cli.kmodctl --socket $BASE/run/kmodd/io.kmodd --json status \\
            2>/dev/null | grep -q '"coldplug_done": true' && break
        sleep 0.05
    done
    kill -TERM $KPID
    wait $KPID
    for i in $(seq 100); do
        n=$(journalctl -D /run/log/journal -o json SYSLOG_IDENTIFIER=kmodd | grep -c Stopping \\
            || true)
        [ "$n" -ge 1 ] && break
        sleep 0.05
    done
    journalctl -D /run/log/journal -x -o short MESSAGE_ID={BAD_FORMAT_ID} >$BASE/explained
    journalctl -D /run/log/journal -o json --output-fields={FIELDS} SYSLOG_IDENTIFIER=kmodd
""")


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(JOURNALD, os.X_OK) or not shutil.which("unshare"),
    reason="needs root, unshare and systemd-journald",
)
def test_one_journal_record_per_outcome_with_every_field(tmp_path: Path) -> None:
    base = tmp_path / "root"
    write_tree(base, (*MACHINE_MODULES, BAD), kver=os.uname().release)
    write_sysfs(base)
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCENARIO,
                             "sh", str(base)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + (base / "stderr").read_text()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["MESSAGE_ID"] for r in records} <= set(MESSAGE_IDS.values())  # every one has it
    located = [(r["MESSAGE"], r.pop("CODE_FILE"), r.pop("CODE_FUNC"), int(r.pop("CODE_LINE")))
               for r in records]
    service, devices = REPO / "kmodd/daemon/service.py", REPO / "kmodd/daemon/telling.py"
    (ready,) = [(f, fn, n) for m, f, fn, n in located if m.startswith("Ready after ")]
    assert ready == (str(service), "_run_locked", line_of(service, 'f"Ready after '))
    told = {(f, fn) for m, f, fn, _ in located if m.startswith("Inserted module ")}
    assert told == {(str(devices), "tell_step")}
    outcomes = [r for r in records if "KMODD_OUTCOME" in r]
    for r in outcomes:
        for volatile in ("__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID"):
            r.pop(volatile, None)
        assert int(r.pop("KMODD_DURATION_USEC", "0")) >= 0
    pci = "/devices/pci0000:00/0000:00:03.0"
    modaliases = {
        pci: "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00",
        f"{pci}/virtio2": "virtio:d00000001v00001AF4",
        "/devices/platform/serial8250": "platform:serial8250",
        "/devices/platform/pcspkr": "platform:pcspkr",
    }
    # Which devices' chains contain each module (the PCI function's and its virtio device's
    # chains run side by side, so either may be the one that inserts a shared module).
    wanted_by = {
        "kmodd_core": {pci, f"{pci}/virtio2"},
        "kmodd_virtio_pci": {pci, f"{pci}/virtio2"},
        "kmodd_net_failover": {f"{pci}/virtio2"},
        "kmodd_virtio_net": {f"{pci}/virtio2"},
        "kmodd_serial": {"/devices/platform/serial8250"},
    }
    inserted = [r for r in outcomes if r["KMODD_OUTCOME"] == "inserted"]
    assert sorted(r["KMODD_MODULE"] for r in inserted) == sorted(wanted_by)  # once each
    for r in inserted:
        module, devpath = r["KMODD_MODULE"], r["KMODD_DEVPATH"]
        assert devpath in wanted_by[module]
        assert r == {"MESSAGE": f"Inserted module '{module}' [{devpath}]", "PRIORITY": "6",
                     "MESSAGE_ID": MESSAGE_IDS[Message.INSERTED],
                     "SYSLOG_IDENTIFIER": "kmodd", "KMODD_OUTCOME": "inserted",
                     "KMODD_MODULE": module, "KMODD_DEVPATH": devpath,
                     "KMODD_MODALIAS": modaliases[devpath]}
    (blacklisted,) = [r for r in outcomes if r["KMODD_OUTCOME"] == "blacklisted"]
    assert blacklisted == {
        "MESSAGE": "Module 'kmodd_pcspkr' is deny-listed (by kmod) [/devices/platform/pcspkr]",
        "PRIORITY": "7", "SYSLOG_IDENTIFIER": "kmodd", "KMODD_OUTCOME": "blacklisted",
        "MESSAGE_ID": MESSAGE_IDS[Message.BLACKLISTED],
        "KMODD_MODULE": "kmodd_pcspkr", "KMODD_DEVPATH": "/devices/platform/pcspkr",
        "KMODD_MODALIAS": "platform:pcspkr"}
    # Everything else is debug: modules a device found loaded, a chain waited for.
    others = [r for r in outcomes if r["KMODD_OUTCOME"] not in ("inserted", "blacklisted")
              and r.get("KMODD_MODULE") != "kmodd_bad_magic"]
    assert {r["PRIORITY"] for r in others} == {"7"}
    (bad,) = [r for r in outcomes if r.get("KMODD_MODULE") == "kmodd_bad_magic"]
    assert {k: v for k, v in bad.items() if k != "MESSAGE"} == {
        "PRIORITY": "4", "SYSLOG_IDENTIFIER": "kmodd", "KMODD_OUTCOME": "failed",
        "MESSAGE_ID": BAD_FORMAT_ID,
        "KMODD_MODULE": "kmodd_bad_magic", "KMODD_DEVPATH": "/devices/platform/kmodd-nodriver",
        "KMODD_MODALIAS": "platform:kmodd-nodriver", "ERRNO": "8",
        "KMODD_DIAGNOSIS": "bad-format"}
    assert bad["MESSAGE"].startswith(
        "Failed to insert module 'kmodd_bad_magic': Exec format error (bad-format: ")
    assert "; kernel: kmodd_bad_magic: version magic '4.19.0 SMP mod_unload ' should be" \
        in bad["MESSAGE"]
    messages = [(r["MESSAGE"], r["MESSAGE_ID"]) for r in records]
    assert messages[-1] == ("Stopping", MESSAGE_IDS[Message.STOPPING])
    assert ("Coldplug done", MESSAGE_IDS[Message.COLDPLUG_DONE]) in [
        (m.partition(":")[0], i) for m, i in messages]
    # journalctl -x: the record, then the catalog's entry with the record's fields filled in.
    explained = (base / "explained").read_text()
    assert "░░ Subject: Module kmodd_bad_magic was built for another kernel\n" in explained
    assert "░░ Defined-By: kmodd\n" in explained
    assert "░░ The kernel refused kmodd_bad_magic with ERRNO=8 (ENOEXEC, " in explained


def line_of(path: Path, text: str) -> int:
    """The number of the one line of `path` that holds `text`."""
    (number,) = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number
