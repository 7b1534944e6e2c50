"""debian/: the kmodd package as Debian builds it, and as an admin installs, removes and purges it.

The package is built once, as a build daemon would: in a fresh Debian 12 root
(tests/packaging/freshroot.py) with this checkout cloned in, `apt-get build-dep ./` installs
what debian/control asks for and nothing more, then `dpkg-buildpackage -us -uc -b`. What it
builds is read with dpkg-deb and lintian; the maintainer scripts run chrooted with logging
stubs for the systemd helpers; and the real apt and dpkg install, remove and purge the package
in another fresh root beside the real udev, whose builtin module loads `udevadm test` shows.

Slow (a few minutes: the build dependencies and udev are installed from Debian's archive);
needs root, unshare, debootstrap and the network. Without them it fails, it does not skip.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.freshroot import CHECKOUT, CLONE, REPO, Fresh, fresh_root

pytestmark = pytest.mark.slow

PYTHON_DIR = "usr/lib/python3/dist-packages"
UNITS = ("kmodd-kernel.socket", "kmodd.service", "kmodd.socket")
#: systemd-modules-load.service stands aside when kmodd took the lists over (modules_load).
MODULES_LOAD_DROP_IN = "systemd-modules-load.service.d/kmodd.conf"
MAN_PAGES = ("man5/kmodd.conf.5", "man8/kmodctl.8", "man8/kmodd.8")
COMPLETION = "usr/share/bash-completion/completions/kmodctl"
DAEMON = "usr/sbin/kmodd"
UDEV_RULES = "lib/udev/rules.d"
# udev's rules files that load modules, and the names kmodd diverts them to.
DIVERTED = ("80-debian-compat.rules", "80-drivers.rules")
DIVERT_SUFFIX = ".diverted-by-kmodd"
# What a server does not have, and kmodd must not bring: GUI and desktop libraries.
GUI = re.compile(r"^(libx11|libxcb|libxext|libxrender|libgtk|libgdk|libqt|qt5|qt6|libwayland|"
                 r"libgl1|libglx|libegl|libgles|mesa|libdrm|libcairo|libpango|libharfbuzz|"
                 r"libfreetype|libfontconfig|fonts-|x11-|xserver|adwaita|hicolor|dbus-x11)")
DEB_ENV = "export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8\n"
BUILD = DEB_ENV + f"""
apt-get update -qq
cd {CHECKOUT}
apt-get build-dep -y -qq ./ >/dev/null
dpkg-source -b . >/dev/null
dpkg-buildpackage -us -uc -b >/root/build.log 2>&1 || {{ tail -n 60 /root/build.log; exit 1; }}
"""


def version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


@dataclass(frozen=True)
class Built:
    out: Path  # what dpkg-buildpackage wrote next to the source tree
    deb: Path
    root: Path  # dpkg-deb -x
    control: Path  # dpkg-deb -e


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True,
                          timeout=600).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("deb")
    out = base / "out"
    out.mkdir()
    with fresh_root(base / "run") as root:
        root.run(BUILD, host_step=CLONE).ok()
        for path in (base / "run/upper/root").glob("kmodd_*"):
            shutil.copy2(path, out)
    deb = out / f"kmodd_{version()}_all.deb"
    run("dpkg-deb", "-x", deb, base / "root")
    run("dpkg-deb", "-e", deb, base / "control")
    return Built(out, deb, base / "root", base / "control")


def parse_fields(text: str) -> dict[str, str]:
    """deb822 fields; continuation lines joined with newlines, as dpkg-deb --field prints."""
    fields: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith(" "):
            fields[name] += "\n" + line
        else:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


# --- the build --------------------------------------------------------------------------------


def test_debian_changelog_gives_the_pyproject_version() -> None:
    changelog = run("dpkg-parsechangelog", "-l", REPO / "debian/changelog", "-S", "Version")
    assert changelog == f"{version()}\n"


def test_dpkg_buildpackage_in_a_clean_root_builds_one_package_for_all_architectures(
        built: Built) -> None:
    """Beside the native source package dpkg-source made of the clean clone."""
    arch = run("dpkg", "--print-architecture").strip()
    assert sorted(p.name for p in built.out.iterdir()) == [
        f"kmodd_{version()}.dsc", f"kmodd_{version()}.tar.xz",
        f"kmodd_{version()}_all.deb", f"kmodd_{version()}_{arch}.buildinfo",
        f"kmodd_{version()}_{arch}.changes"]


def test_the_control_fields_depend_only_on_what_kmodd_imports(built: Built) -> None:
    fields = parse_fields(run("dpkg-deb", "--field", built.deb))
    source = parse_fields((REPO / "debian/control").read_text().split("\n\n")[0])
    assert {k: fields[k] for k in ("Package", "Version", "Architecture", "Maintainer",
                                   "Section", "Priority", "Recommends")} == {
        "Package": "kmodd", "Version": version(), "Architecture": "all",
        "Maintainer": source["Maintainer"], "Section": "admin", "Priority": "optional",
        "Recommends": "python3-systemd"}
    # pyproject's dependencies (tests/packaging/test_dependencies.py), as Debian names them,
    # and procps for kmodd.service's ExecReload=/bin/kill.
    assert sorted(d.strip() for d in fields["Depends"].split(",")) == [
        "procps", "python3-zstandard", "python3:any (>= 3.11~)"]
    synopsis, *body = fields["Description"].split("\n")
    assert synopsis == "kernel-module autoloader daemon and kmod-compatible tools"
    assert all(line.startswith(" ") and 1 < len(line) <= 80 for line in body)


def test_lintian_pedantic_reports_no_error_and_no_warning(built: Built) -> None:
    """On the binary package (its .changes) and the source package (its .dsc). Overridden
    tags are only those debian/*.lintian-overrides lists, each under a comment that says
    why."""
    changes = next(built.out.glob("*.changes"))
    dsc = next(built.out.glob("*.dsc"))
    result = subprocess.run(["lintian", "--pedantic", "--allow-root", "--show-overrides",
                             str(changes), str(dsc)], capture_output=True, text=True,
                            timeout=600)
    print(result.stdout)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[A-Z]: ", line)]
    assert result.stderr == ""
    assert [t for t in tags if t[0] in "EW"] == []
    overrides = []
    for path in sorted((REPO / "debian").glob("*lintian-overrides")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line and not line.startswith("#"):
                assert number > 0 and lines[number - 1].startswith("# "), f"{path}: {line}"
                overrides.append(line)
    assert sorted(t.split(": ", 2)[2] for t in tags if t.startswith("O: ")) == sorted(overrides)


# --- what goes where ------------------------------------------------------------------------


def package_files(built: Built) -> dict[str, str]:
    """Every file and link of the package with its mode, as `dpkg-deb --contents` lists it."""
    listed = {}
    for line in run("dpkg-deb", "--contents", built.deb).splitlines():
        mode, _owner, _size, _date, _time, path = line.split(None, 5)
        if not mode.startswith("d"):
            listed[path.removeprefix("./").split(" -> ")[0]] = mode
    return listed


def test_files_are_where_debian_puts_them(built: Built) -> None:
    """The daemon in /usr/sbin, kmodctl in /usr/bin, the units, the udev rules kmodd puts in
    place of udev's, the catalog, manual pages, completion and docs; /etc/kmodd.conf; the
    Python package without bytecode; nothing else (no tests, nothing in /etc/udev)."""
    files = package_files(built)
    modules = {f"{PYTHON_DIR}/{p.relative_to(REPO)}": "-rw-r--r--"
               for p in (REPO / "kmodd").rglob("*")
               if p.is_file() and p.suffix in (".py", ".typed", ".varlink")
               and "__pycache__" not in p.parts}
    dist_info = {p: m for p, m in files.items()
                 if p.startswith(f"{PYTHON_DIR}/kmodd-{version()}.dist-info/")}
    assert f"{PYTHON_DIR}/kmodd-{version()}.dist-info/entry_points.txt" in dist_info
    rest = {p: m for p, m in files.items() if p not in modules and p not in dist_info}
    assert {p for p in files if p.startswith(f"{PYTHON_DIR}/kmodd/")} == set(modules)
    assert rest == {
        "etc/kmodd.conf": "-rw-r--r--",
        **{f"lib/systemd/system/{unit}": "-rw-r--r--" for unit in UNITS},
        f"lib/systemd/system/{MODULES_LOAD_DROP_IN}": "-rw-r--r--",
        f"{UDEV_RULES}/80-debian-compat.rules": "-rw-r--r--",
        "usr/bin/kmodctl": "-rwxr-xr-x",
        DAEMON: "-rwxr-xr-x",
        "usr/lib/systemd/catalog/kmodd.catalog": "-rw-r--r--",
        COMPLETION: "-rw-r--r--",
        "usr/share/doc/kmodd/changelog.gz": "-rw-r--r--",
        "usr/share/doc/kmodd/copyright": "-rw-r--r--",
        "usr/share/lintian/overrides/kmodd": "-rw-r--r--",
        **{f"usr/share/man/{page}.gz": "-rw-r--r--" for page in MAN_PAGES},
    }
    assert (built.control / "conffiles").read_text() == "/etc/kmodd.conf\n"


def test_shipped_files_are_the_checkouts_byte_for_byte(built: Built) -> None:
    pairs = [(f"lib/systemd/system/{u}", f"systemd/{u}") for u in UNITS]
    pairs += [("etc/kmodd.conf", "etc/kmodd.conf"),
              (f"lib/systemd/system/{MODULES_LOAD_DROP_IN}", f"systemd/{MODULES_LOAD_DROP_IN}"),
              ("usr/lib/systemd/catalog/kmodd.catalog", "catalog/kmodd.catalog"),
              (COMPLETION, "completion/kmodctl.bash"),
              (f"{UDEV_RULES}/80-debian-compat.rules", "debian/kmodd.debian-compat.udev"),
              ("usr/share/doc/kmodd/copyright", "debian/copyright")]
    pairs += [(f"{PYTHON_DIR}/{p.relative_to(REPO)}", str(p.relative_to(REPO)))
              for suffix in ("py", "varlink") for p in (REPO / "kmodd").rglob(f"*.{suffix}")]
    different = [shipped for shipped, source in pairs
                 if (built.root / shipped).read_bytes() != (REPO / source).read_bytes()]
    assert different == []
    for page in MAN_PAGES:
        packed = (built.root / f"usr/share/man/{page}.gz").read_bytes()
        assert gzip.decompress(packed) == (REPO / "man" / Path(page).name).read_bytes()


def test_the_commands_are_debians_python3_running_the_pyproject_entry_points(
        built: Built) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for command, path in (("kmodd", DAEMON), ("kmodctl", "usr/bin/kmodctl")):
        module, function = scripts[command].split(":")
        text = (built.root / path).read_text()
        assert text.startswith("#!/usr/bin/python3\n")
        assert f"from {module} import {function}" in text
    assert not (built.root / "usr/bin/kmodd").exists()


def test_kmodd_service_starts_the_daemon_where_the_package_installs_it(built: Built) -> None:
    unit = (built.root / "lib/systemd/system/kmodd.service").read_text()
    assert [value.split()[0] for value in unit_values(unit, "ExecStart")] == [f"/{DAEMON}"]


def test_every_unit_points_at_manual_pages_the_package_ships(built: Built) -> None:
    for name in UNITS:
        unit = (built.root / "lib/systemd/system" / name).read_text()
        pages = [page for value in unit_values(unit, "Documentation") for page in value.split()]
        assert pages and pages[0] == "man:kmodd(8)", name
        for page in pages:
            match = re.fullmatch(r"man:([\w.-]+)\((\d)\)", page)
            assert match is not None, page
            assert (built.root / f"usr/share/man/man{match[2]}/{match[1]}.{match[2]}.gz"
                    ).is_file(), page


# --- the maintainer scripts, with the systemd helpers logged ------------------------------------

STUB = """#!/bin/sh
echo "${0##*/} $*" >> /calls
if [ "$1 $2" = "--quiet was-enabled" ]; then exit "${WAS_ENABLED:-0}"; fi
exit 0
"""
STUBS = ("deb-systemd-helper", "deb-systemd-invoke", "systemctl", "py3compile", "py3clean",
         "dpkg-divert", "dpkg-maintscript-helper")
# Stubbed and left out of the calls compared below: what they do is dpkg's and Python's own
# (dpkg-maintscript-helper's rm_conffile runs for real in the upgrade test further down).
UNCOMPARED = ("py3compile", "py3clean", "dpkg-maintscript-helper")


def run_maintainer_scripts(built: Built, tmp_path: Path, steps: Sequence[Sequence[str]], *,
                           systemd: bool, was_enabled: int = 0) -> list[str]:
    """Run each step (`script arg...`) chrooted into a scratch root: the host's /usr
    read-only, /run/systemd/system if `systemd`, and logging stubs for the helpers. Returns
    the helpers' calls."""
    root = tmp_path / "root"
    for name in ("usr", "dev", "maint", "stubs", "run", "tmp"):
        (root / name).mkdir(parents=True)
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    mounts = ["/usr"]
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            (root / name).mkdir()
            mounts.append(str(host))
    (root / "dev/null").touch()
    for stub in STUBS:
        (root / "stubs" / stub).write_text(STUB)
        (root / "stubs" / stub).chmod(0o755)
    for name in ("preinst", "postinst", "prerm", "postrm"):
        shutil.copy2(built.control / name, root / "maint" / name)
    (root / "calls").touch()
    setup = " && ".join(
        [f'mount --bind {m} "$R{m}" && mount -o remount,bind,ro "$R{m}"' for m in mounts]
        + ['mount --bind /dev/null "$R/dev/null"'])
    env = {"PATH": "/stubs:/usr/sbin:/usr/bin:/sbin:/bin", "WAS_ENABLED": str(was_enabled),
           "R": str(root)}
    for step in steps:
        script, *args = step
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'{setup} && exec chroot "$R" /maint/"$0" "$@"', script, *args],
            env=env, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (0, ""), step
    return [c for c in (root / "calls").read_text().splitlines()
            if c.split()[0] not in UNCOMPARED]


def test_a_first_install_diverts_udevs_rules_enables_every_unit_and_starts_them(
        built: Built, tmp_path: Path) -> None:
    calls = run_maintainer_scripts(built, tmp_path, [["preinst", "install"],
                                                     ["postinst", "configure", ""]],
                                   systemd=True)
    diverts = [c for c in calls if c.startswith("dpkg-divert")]
    assert diverts == [
        f"dpkg-divert --package kmodd --quiet --add --rename --divert "
        f"/{UDEV_RULES}/{name}{DIVERT_SUFFIX} /{UDEV_RULES}/{name}"
        for name in ("80-drivers.rules", "80-debian-compat.rules")]
    assert {c.split()[-1] for c in calls if "helper enable" in c} == set(UNITS)
    assert [c for c in calls if c.startswith("deb-systemd-invoke")] == [
        "deb-systemd-invoke start kmodd-kernel.socket kmodd.service kmodd.socket"]


def test_an_upgrade_restarts_the_daemon_but_never_the_sockets_that_queue_uevents(
        built: Built, tmp_path: Path) -> None:
    calls = run_maintainer_scripts(
        built, tmp_path, [["prerm", "upgrade", "0.1.1"], ["preinst", "upgrade", "0.0.9"],
                          ["postinst", "configure", "0.0.9"]], systemd=True)
    invoked = [c for c in calls if c.startswith("deb-systemd-invoke")]
    assert invoked == [
        "deb-systemd-invoke start kmodd-kernel.socket kmodd.service kmodd.socket",
        "deb-systemd-invoke restart kmodd.service"]


def test_an_install_without_running_systemd_enables_the_units_but_starts_nothing(
        built: Built, tmp_path: Path) -> None:
    calls = run_maintainer_scripts(built, tmp_path, [["postinst", "configure", ""]],
                                   systemd=False)
    assert {c.split()[-1] for c in calls if "helper enable" in c} == set(UNITS)
    assert not [c for c in calls if c.startswith(("deb-systemd-invoke", "systemctl"))]


def test_units_the_admin_disabled_stay_disabled_on_upgrade(built: Built, tmp_path: Path) -> None:
    calls = run_maintainer_scripts(built, tmp_path, [["postinst", "configure", "0.0.9"]],
                                   systemd=False, was_enabled=1)
    assert not [c for c in calls if "helper enable" in c]
    assert {c.split()[-1] for c in calls if "update-state" in c} == set(UNITS)


def test_removal_stops_kmodd_and_gives_udev_its_rules_back(built: Built, tmp_path: Path) -> None:
    calls = run_maintainer_scripts(built, tmp_path, [["prerm", "remove"], ["postrm", "remove"]],
                                   systemd=True)
    assert [c for c in calls if not c.startswith("systemctl")] == [
        "deb-systemd-invoke stop kmodd-kernel.socket kmodd.service kmodd.socket",
        *(f"dpkg-divert --package kmodd --quiet --remove --rename --divert "
          f"/{UDEV_RULES}/{name}{DIVERT_SUFFIX} /{UDEV_RULES}/{name}"
          for name in ("80-drivers.rules", "80-debian-compat.rules"))]


# --- the real apt and dpkg, beside the real udev -------------------------------------------------

# udev's builtin `kmod load` for the first devices under /sys that have a MODALIAS, as
# `udevadm test` lists what it would run ("run: 'kmod load'"); then what is where.
UDEV_PROBE = r"""
for d in $(find /sys/devices -name modalias -printf '%h\n' | sort | head -n 40); do
    if udevadm test --action=add "$d" 2>/dev/null | grep -q "^run: 'kmod load"; then
        echo "udev loads: $d"
    fi
done
"""
STATE_PROBE = r"""
dpkg-query -W -f='status ${db:Status-Abbrev}\n' kmodd 2>/dev/null || echo "status unknown"
dpkg-divert --list | sort
ls /lib/udev/rules.d | grep '^80-' || true
"""


@dataclass(frozen=True)
class State:
    status: str
    diversions: list[str]
    rules: list[str]  # /lib/udev/rules.d/80-*
    loading_devices: int  # of the probed devices, those udev's builtin would load modules for


def state(root: Fresh) -> State:
    lines = root.run(STATE_PROBE).ok().splitlines()
    status = lines[0]
    diversions = [line for line in lines[1:] if line.startswith("diversion ") and "kmodd" in line]
    rules = [line for line in lines[1:] if line.startswith("80-")]
    loading = root.run(UDEV_PROBE).ok().splitlines()
    return State(status, diversions, rules, len(loading))


def diversion(name: str) -> str:
    return (f"diversion of /{UDEV_RULES}/{name} to /{UDEV_RULES}/{name}{DIVERT_SUFFIX} "
            "by kmodd")


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_with_the_real_dpkg_udev_loads_nothing_while_kmodd_is_installed_and_again_after(
        built: Built, tmp_path: Path) -> None:
    """apt installs udev, then kmodd (and what it depends on: nothing a server lacks);
    `apt remove` gives module loading back to udev; `apt purge` leaves no file of kmodd."""
    with fresh_root(tmp_path) as root:
        root.run(DEB_ENV + "apt-get update -qq && apt-get install -y -qq "
                 "--no-install-recommends udev systemd man-db >/dev/null").ok()
        before = state(root)
        assert before == State("status unknown", [], ["80-debian-compat.rules",
                                                      "80-drivers.rules",
                                                      "80-net-setup-link.rules"],
                               before.loading_devices)
        assert before.loading_devices > 3

        copy = f'cp "{built.deb}" "$ROOT/tmp/"'
        simulated = root.run(DEB_ENV + f"apt-get install -s ./tmp/{built.deb.name}",
                             host_step=copy).ok()
        pulled = [line.split()[1] for line in simulated.splitlines() if line.startswith("Inst ")]
        print(f"apt install ./{built.deb.name} installs: {' '.join(sorted(pulled))}")
        assert "kmodd" in pulled
        assert [p for p in pulled if GUI.match(p)] == []

        root.run(DEB_ENV + f"apt-get install -y -qq ./tmp/{built.deb.name} >/dev/null",
                 host_step=copy).ok()
        installed = state(root)
        assert installed == State(
            "status ii ", sorted(diversion(name) for name in DIVERTED),
            ["80-debian-compat.rules", "80-debian-compat.rules" + DIVERT_SUFFIX,
             "80-drivers.rules" + DIVERT_SUFFIX, "80-net-setup-link.rules"], 0)
        # kmodd's 80-debian-compat.rules keeps every rule of udev's but its module load.
        ours = root.run(f"cat /{UDEV_RULES}/80-debian-compat.rules").ok()
        udevs = root.run(f"cat /{UDEV_RULES}/80-debian-compat.rules{DIVERT_SUFFIX}").ok()
        assert rule_lines(ours) == [line for line in rule_lines(udevs)
                                    if 'RUN{builtin}+="kmod load sg"' not in line]
        verify = root.run("systemd-analyze verify " +
                          " ".join(f"/lib/systemd/system/{unit}" for unit in UNITS))
        assert (verify.rc, verify.stdout, verify.stderr) == (0, "", "")
        versions = root.run("kmodd --version && kmodctl --version && command -v kmodd").ok()
        assert versions == f"kmodd {version()}\nkmodctl {version()}\n/{DAEMON}\n"
        # The kmod-compatible tools, as kmodctl(8) documents them: a kmodctl command, or a
        # link to kmodctl named after the tool.
        tools = root.run("kmodctl modprobe -V && ln -s /usr/bin/kmodctl /tmp/modprobe && "
                         "/tmp/modprobe -V").ok()
        assert tools == 2 * f"kmodd version {version()} (modprobe compatible with kmod 30)\n"
        enabled = root.run("ls /etc/systemd/system/sockets.target.wants "
                           "/etc/systemd/system/sysinit.target.wants").ok()
        assert {"kmodd-kernel.socket", "kmodd.socket", "kmodd.service"} <= set(enabled.split())

        root.run(DEB_ENV + "apt-get remove -y -qq kmodd >/dev/null").ok()
        assert state(root) == State("status rc ", [], before.rules, before.loading_devices)
        assert root.run("test -f /etc/kmodd.conf && echo kept").ok() == "kept\n"

        root.run(DEB_ENV + "apt-get purge -y -qq kmodd >/dev/null").ok()
        assert state(root) == before
        # Not kmodd's: the downloaded package in /tmp, this test bed's cache of the Debian
        # kernel (mounted from the host), and the pages man-db formatted for
        # `systemd-analyze verify` into its own cache (its cron job expires them).
        left = root.run("find / -xdev -path /proc -prune -o -path /sys -prune -o -path /dev "
                        "-prune -o -path /tmp -prune -o -path /var/cache/kmodd-test -prune -o "
                        "-path /var/cache/man -prune -o -name '*kmodd*' -print").ok()
        assert left == ""


OLD_PACKAGE = r"""
set -e
d=/tmp/old-kmodd
mkdir -p $d/DEBIAN $d/etc/udev/rules.d
for f in 80-drivers.rules 80-debian-compat.rules; do
    echo "# Installed by kmodd: udev's module loading is kmodd's" > $d/etc/udev/rules.d/$f
    echo /etc/udev/rules.d/$f >> $d/DEBIAN/conffiles
done
printf 'Package: kmodd\nVersion: 0.1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n'\
'Description: the dpkg-deb package of packaging/build-deb before 0.2.0\n' > $d/DEBIAN/control
dpkg-deb --build $d /tmp/kmodd_0.1.0_all.deb >/dev/null
dpkg -i /tmp/kmodd_0.1.0_all.deb >/dev/null
"""


def test_an_upgrade_from_the_old_package_removes_its_udev_masks(built: Built,
                                                                 tmp_path: Path) -> None:
    """0.1.0's packages masked udev's rules with conffiles in /etc/udev/rules.d; after an
    upgrade they are gone (dpkg-maintscript-helper rm_conffile), so `apt remove` gives udev
    its module loading back."""
    with fresh_root(tmp_path) as root:
        root.run(DEB_ENV + "apt-get update -qq && apt-get install -y -qq "
                 "--no-install-recommends udev >/dev/null").ok()
        before = state(root)
        root.run(OLD_PACKAGE).ok()
        assert state(root).loading_devices == 0  # the old masks at work
        copy = f'cp "{built.deb}" "$ROOT/tmp/"'
        root.run(DEB_ENV + f"apt-get install -y -qq ./tmp/{built.deb.name} >/dev/null",
                 host_step=copy).ok()
        assert root.run("ls -A /etc/udev/rules.d").ok() == ""
        conffiles = root.run("dpkg-query -W -f='${Conffiles}' kmodd").ok()
        assert [line.split()[0] for line in conffiles.strip().splitlines()] == [
            "/etc/kmodd.conf"]
        root.run(DEB_ENV + "apt-get remove -y -qq kmodd >/dev/null").ok()
        assert state(root).loading_devices == before.loading_devices > 3
