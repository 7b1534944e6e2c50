"""systemd/, etc/ and udev's rules: the units pass `systemd-analyze verify` and agree with the
code; the Debian package's udev rules take exactly udev's module loading away."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from kmodd.cli.client import SOCKET_PATH
from kmodd.core.runpaths import POLICY_FILE
from kmodd.core.settings import SETTINGS, defaults, format_size, parse_config
from tests.debian_udev import udev_rules_dir

REPO = Path(__file__).resolve().parents[2]
UNITS = ("kmodd.service", "kmodd.socket", "kmodd-kernel.socket")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "systemd" / name)
    return parser


def _verify_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root with this system's units, ours, and the executables our units name."""
    entry = Path(sysconfig.get_path("scripts")) / "kmodd"
    if not entry.exists():
        pytest.skip("the kmodd entry point is not installed (pip install -e .)")
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "bin").mkdir()
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    # ExecStart=/usr/sbin/kmodd: the console script that `pip install` makes for the daemon
    # (kmodd.daemon.launch:main), copied where the Debian package puts it.
    shutil.copy(entry, root / "usr/sbin/kmodd")
    shutil.copy("/bin/kill", root / "bin/kill")
    # The manual pages the units' Documentation= name, where the package puts them: verify
    # asks `man` for each, and man searches $MANPATH.
    for page in (REPO / "man").iterdir():
        section = root / f"usr/share/man/man{page.suffix.lstrip('.')}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section / page.name)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *UNITS],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MANPATH": str(root / "usr/share/man")})


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@needs_analyze
def test_the_units_pass_systemd_analyze_verify_without_a_word(tmp_path: Path) -> None:
    units = {n: (REPO / "systemd" / n).read_text() for n in UNITS}
    result = _verify(_verify_root(tmp_path, units))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_analyze
def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    units = {n: (REPO / "systemd" / n).read_text() for n in UNITS}
    units["kmodd.service"] = units["kmodd.service"].replace("Type=notify", "Typo=notify")
    result = _verify(_verify_root(tmp_path, units))
    assert "Unknown key 'Typo' in section [Service], ignoring." in result.stderr


def test_the_service_is_an_early_notify_daemon_that_keeps_cap_sys_module() -> None:
    service = _unit("kmodd.service")["Service"]
    unit = _unit("kmodd.service")["Unit"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "3min"
    assert "systemd-udev-trigger.service" in unit["Before"].split()
    assert unit["DefaultDependencies"] == "no"
    assert service["CapabilityBoundingSet"].split() == ["CAP_SYS_MODULE", "CAP_NET_ADMIN",
                                                         "CAP_SYSLOG"]
    assert "@module" in service["SystemCallFilter"].split()
    assert "ProtectKernelModules" not in service  # it would drop CAP_SYS_MODULE
    assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_NETLINK"]
    assert service["Sockets"].split() == ["kmodd.socket", "kmodd-kernel.socket"]


def test_the_service_is_bounded_and_writes_only_its_runtime_directory_and_drivers_probe(
        ) -> None:
    from kmodd.system.instance import LOCK_FILE
    from kmodd.system.loadrecords import RECORD_FILE

    service = _unit("kmodd.service")["Service"]
    control = _unit("kmodd.socket")["Socket"]
    assert (service["MemoryHigh"], service["MemoryMax"], service["TasksMax"]) == (
        "96M", "160M", "512")
    # At MemoryMax the OOM killer must be able to pick kmodd (and the unit restart it).
    assert -1000 < int(service["OOMScoreAdjust"]) < 0
    assert service["Restart"] == "always"
    assert (service["ProtectSystem"], service["PrivateMounts"], service["UMask"]) == (
        "strict", "yes", "0077")
    # The one writable place, kept at stop: the instance lock and the control socket's home.
    runtime, policy_dir = service["RuntimeDirectory"].split()
    assert "/run/" + policy_dir == os.path.dirname(POLICY_FILE)  # the autoload policy's
    assert "/run/" + runtime == os.path.dirname(LOCK_FILE) \
        == os.path.dirname(RECORD_FILE) == os.path.dirname(control["ListenStream"])
    assert service["RuntimeDirectoryPreserve"] == "yes"
    # Besides: the buses' drivers_probe files, for the re-probe at start (ProtectKernelTunables
    # makes the rest of /sys read-only).
    assert (service["ProtectKernelTunables"], service["ReadWritePaths"]) == ("yes", "/sys/bus")
    # tracefs stays read-only: kmodd's trace instance is made from outside the sandbox.
    assert service["ExecStartPre"].startswith("+-/bin/sh -c 'cd /sys/kernel/tracing/instances")
    assert service["ExecStopPost"] == "+-/bin/rmdir /sys/kernel/tracing/instances/kmodd"


DROP_IN = "systemd-modules-load.service.d/kmodd.conf"


def test_systemd_modules_load_stands_aside_once_kmodd_is_ready_and_only_if_it_took_over(
        ) -> None:
    from kmodd.core.runpaths import TAKEOVER_FLAG

    drop_in = _unit(DROP_IN)
    assert dict(drop_in["Unit"]) == {"After": "kmodd.service",
                                     "ConditionPathExists": f"!{TAKEOVER_FLAG}"}
    assert drop_in.sections() == ["Unit"]
    # The flag lives in the service's runtime directory, and kmodd.service runs before
    # sysinit.target as systemd-modules-load.service does: ordering one after the other makes
    # no cycle.
    service = _unit("kmodd.service")
    runtime = ["/run/" + d for d in service["Service"]["RuntimeDirectory"].split()]
    assert os.path.dirname(TAKEOVER_FLAG) in runtime
    assert service["Unit"]["DefaultDependencies"] == "no"
    assert "sysinit.target" in service["Unit"]["Before"].split()


@needs_analyze
def test_the_drop_in_passes_systemd_analyze_verify_with_systemd_modules_load(
        tmp_path: Path) -> None:
    units = {n: (REPO / "systemd" / n).read_text() for n in UNITS}
    root = _verify_root(tmp_path, units)
    target = root / "etc/systemd/system" / DROP_IN
    target.parent.mkdir(parents=True)
    shutil.copy(REPO / "systemd" / DROP_IN, target)
    shutil.copy("/lib/systemd/systemd-modules-load", root / "lib/systemd/systemd-modules-load")
    result = subprocess.run(
        # --man=no: systemd's own pages are not in the root (ours are checked above).
        ["systemd-analyze", "verify", "--man=no", f"--root={root}",
         "systemd-modules-load.service", *UNITS],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MANPATH": str(root / "usr/share/man")})
    assert (result.returncode, result.stderr) == (0, "")


def test_the_service_may_read_the_kernel_log_to_quote_it_on_failures() -> None:
    service = _unit("kmodd.service")["Service"]
    assert service["ProtectKernelLogs"] == "no"  # "yes" makes /dev/kmsg inaccessible
    assert service["PrivateDevices"] == "yes"
    assert service["BindReadOnlyPaths"] == "/dev/kmsg"  # into the private /dev
    assert service["DeviceAllow"] == "/dev/kmsg r"  # past PrivateDevices' closed policy
    assert "CAP_SYSLOG" in service["CapabilityBoundingSet"].split()  # dmesg_restrict=1


def test_the_sockets_match_the_daemons_defaults() -> None:
    control = _unit("kmodd.socket")["Socket"]
    kernel = _unit("kmodd-kernel.socket")["Socket"]
    assert control["ListenStream"] == defaults().control_socket == SOCKET_PATH
    assert control["SocketMode"] == "0666"
    assert kernel["ListenNetlink"] == "kobject-uevent 1"
    assert kernel["ReceiveBuffer"] == format_size(defaults().receive_buffer)
    assert kernel["PassCredentials"] == "yes"
    assert {control["FileDescriptorName"], kernel["FileDescriptorName"]} == {"control", "kernel"}


def test_the_default_config_file_documents_every_setting_at_its_default() -> None:
    text = (REPO / "etc/kmodd.conf").read_text()
    commented = re.findall(r"^#(\w+) =(.*)$", text, re.MULTILINE)
    assert [name for name, _ in commented] == [s.name for s in SETTINGS]
    uncommented = "\n".join(f"{name} ={value}" for name, value in commented)
    result = parse_config(uncommented, "etc/kmodd.conf")
    assert result.diagnostics == ()
    assert result.values == {s.name: s.default for s in SETTINGS}


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _diverted() -> list[str]:
    preinst = (REPO / "debian/kmodd.preinst").read_text()
    listed = re.search(r'^DIVERTED="([^"]*)"$', preinst, re.MULTILINE)
    assert listed is not None
    return listed.group(1).split()


def test_the_package_diverts_exactly_udevs_rules_files_that_load_modules() -> None:
    debian = Path(udev_rules_dir())
    loading = sorted(p.name for p in debian.glob("*.rules") if "kmod load" in p.read_text())
    assert sorted(_diverted()) == loading == ["80-debian-compat.rules", "80-drivers.rules"]


def test_the_packages_own_udev_rules_keep_everything_of_udevs_but_the_module_loads() -> None:
    """kmodd ships a file in place of a diverted one (debian/kmodd.NAME.udev) where udev's
    holds more than module loads; 80-drivers.rules holds nothing else."""
    debian = Path(udev_rules_dir())
    for name in _diverted():
        ours = REPO / f"debian/kmodd.{name.split('-', 1)[1].removesuffix('.rules')}.udev"
        kept = [r for r in _rules((debian / name).read_text()) if "kmod load" not in r]
        if name == "80-drivers.rules":
            # What remains of udev's file without its loads is only its own control flow.
            assert kept == ['ACTION!="add", GOTO="drivers_end"', 'LABEL="drivers_end"']
            assert not ours.exists()
        else:
            assert _rules(ours.read_text()) == kept
            assert not any("kmod" in rule for rule in _rules(ours.read_text()))
