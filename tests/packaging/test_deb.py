"""packaging/build-deb: the kmodd .deb a Debian admin installs, checked with dpkg-deb itself.

The package is built once from a snapshot of the checkout (so that edits made meanwhile do
not change what a test expects), then read with `dpkg-deb --info/--field/--contents/-e/-x`.
The maintainer scripts run in a private mount namespace, chrooted into a scratch root whose
/etc/udev/rules.d and /run are the test's own and whose systemd helpers only log their calls.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kmodd.core.autoload.messages import MESSAGE_IDS

REPO = Path(__file__).resolve().parents[2]
MAINTAINER = "kmodd tests <tests@example.org>"
EPOCH = "1700000000"
PYTHON_DIR = "usr/lib/python3/dist-packages"
UNITS = ("kmodd-kernel.socket", "kmodd.socket", "kmodd.service")
UDEV_MASKS = ("80-debian-compat.rules", "80-drivers.rules")
CONFFILES = ("/etc/kmodd.conf", *(f"/etc/udev/rules.d/{name}" for name in UDEV_MASKS))
MAINTAINER_SCRIPTS = ("postinst", "postrm", "prerm")
MAN_PAGES = ("man8/kmodd.8", "man8/kmodctl.8", "man5/kmodd.conf.5")
COMPLETION = "usr/share/bash-completion/completions/kmodctl"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg-deb is not installed (not a Debian system)")


@dataclass(frozen=True)
class Built:
    checkout: Path  # the snapshot of the checkout the package was built from
    deb: Path
    root: Path  # dpkg-deb -x
    control: Path  # dpkg-deb -e

    @property
    def version(self) -> str:
        return str(project(self.checkout)["version"])


def project(checkout: Path) -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
    return table


def snapshot(dest: Path) -> Path:
    """A copy of what build-deb reads from the checkout, with bytecode that must stay out of
    the package planted where Python leaves it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir()
    shutil.copy2(REPO / "pyproject.toml", dest)
    for name in ("kmodd", "systemd", "etc", "packaging", "man", "completion", "catalog"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    (dest / "kmodd/__pycache__").mkdir()
    (dest / "kmodd/__pycache__/__init__.cpython-311.pyc").write_bytes(b"planted")
    (dest / "kmodd/cli/kmodctl.pyc").write_bytes(b"planted")
    return dest


def build_deb(checkout: Path, *args: str, environ: Mapping[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ if environ is None else environ)
    env.setdefault("SOURCE_DATE_EPOCH", EPOCH)
    return subprocess.run([str(checkout / "packaging/build-deb"), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True,
                          timeout=60).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("deb")
    checkout = snapshot(base / "checkout")
    result = build_deb(checkout, "--out", str(base / "out"), "--maintainer", MAINTAINER)
    assert result.returncode == 0, result.stderr
    debs = list((base / "out").iterdir())
    assert len(debs) == 1
    run("dpkg-deb", "-x", debs[0], base / "root")
    run("dpkg-deb", "-e", debs[0], base / "control")
    return Built(checkout, debs[0], base / "root", base / "control")


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


def installed_size(root: Path) -> int:
    """KiB, the way build-deb counts: files rounded up to a KiB, one per directory."""
    return sum(-(-p.stat().st_size // 1024) if p.is_file() else 1 for p in root.rglob("*"))


# --- the file name and the control fields ---------------------------------------------------


def test_the_package_file_is_named_after_the_pyproject_version(built: Built) -> None:
    assert built.deb.name == f"kmodd_{built.version}_all.deb"


def test_the_control_fields_are_exactly_those_an_admin_expects(built: Built) -> None:
    fields = parse_fields(run("dpkg-deb", "--field", built.deb))
    description = fields.pop("Description")
    assert fields == {
        "Package": "kmodd",
        "Version": built.version,
        "Architecture": "all",
        "Maintainer": MAINTAINER,
        "Installed-Size": str(installed_size(built.root)),
        "Depends": "python3 (>= 3.11), python3-pyroute2, python3-pyudev, python3-pyelftools, "
                   "python3-zstandard",
        "Recommends": "python3-systemd",
        "Section": "admin",
        "Priority": "optional",
    }
    synopsis, *body = description.split("\n")
    assert synopsis == "kernel-module autoloader daemon and kmod-compatible tools"
    assert len(body) > 3
    assert all(line.startswith(" ") and 1 < len(line) <= 80 for line in body)
    assert " Installing this package masks udev's own module loading" in "\n".join(body)


def test_the_control_archive_holds_the_control_files_and_executable_maintainer_scripts(
        built: Built) -> None:
    members = re.findall(r"^ +\d+ bytes, +\d+ lines +(\*?) +(\S+)", run("dpkg-deb", "--info",
                                                                        built.deb), re.MULTILINE)
    assert sorted((name, star == "*") for star, name in members) == [
        ("conffiles", False), ("control", False), ("md5sums", False),
        ("postinst", True), ("postrm", True), ("prerm", True),
    ]


def test_every_dependency_named_in_the_control_file_is_a_real_debian_package(
        built: Built) -> None:
    if shutil.which("apt-cache") is None or subprocess.run(
            ["apt-cache", "show", "python3"], capture_output=True).returncode != 0:
        pytest.skip("apt has no package lists here (apt-get update)")
    fields = parse_fields(run("dpkg-deb", "--field", built.deb))
    names = [re.sub(r"\s*\(.*\)", "", d).strip()
             for field in ("Depends", "Recommends") for d in fields[field].split(",")]
    unknown = [n for n in names if subprocess.run(["apt-cache", "show", n], capture_output=True,
                                                  timeout=60).returncode != 0]
    assert unknown == []


# --- what goes where --------------------------------------------------------------------------


def expected_files(checkout: Path, version: str) -> dict[str, str]:
    """Every file of the package, with its mode as `dpkg-deb --contents` prints it."""
    files = {f"{PYTHON_DIR}/kmodd/{p.relative_to(checkout / 'kmodd')}": "-rw-r--r--"
             for p in (checkout / "kmodd").rglob("*.py")}
    files[f"{PYTHON_DIR}/kmodd/py.typed"] = "-rw-r--r--"
    for name in ("METADATA", "entry_points.txt"):
        files[f"{PYTHON_DIR}/kmodd-{version}.dist-info/{name}"] = "-rw-r--r--"
    for command in ("kmodd", "kmodctl"):
        files[f"usr/bin/{command}"] = "-rwxr-xr-x"
    for unit in UNITS:
        files[f"lib/systemd/system/{unit}"] = "-rw-r--r--"
    for conffile in CONFFILES:
        files[conffile.lstrip("/")] = "-rw-r--r--"
    for doc in ("usr/share/doc/kmodd/copyright", "usr/share/doc/kmodd/changelog.gz",
                "usr/share/lintian/overrides/kmodd", COMPLETION,
                "usr/lib/systemd/catalog/kmodd.catalog",
                *(f"usr/share/man/{page}.gz" for page in MAN_PAGES)):
        files[doc] = "-rw-r--r--"
    return files


def test_the_data_archive_lists_exactly_the_expected_paths_owned_by_root(built: Built) -> None:
    """The package and its dist-info, the commands, units, conffiles, the journal catalog
    and docs: no bytecode, no tests, nothing else; directories 0755, commands 0755,
    everything else 0644."""
    files = expected_files(built.checkout, built.version)
    expected = {f"./{path}": (mode, "root/root") for path, mode in files.items()}
    for path in files:
        for parent in Path(path).parents:
            name = "./" if parent == Path(".") else f"./{parent}/"
            expected[name] = ("drwxr-xr-x", "root/root")
    listed = {}
    for line in run("dpkg-deb", "--contents", built.deb).splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        listed[path] = (mode, owner)
    assert listed == expected


def test_the_conffiles_are_the_config_file_and_the_udev_rules_under_etc(built: Built) -> None:
    assert (built.control / "conffiles").read_text() == "".join(f"{c}\n" for c in CONFFILES)
    under_etc = sorted(f"/{p.relative_to(built.root)}" for p in (built.root / "etc").rglob("*")
                       if p.is_file())
    assert under_etc == sorted(CONFFILES)


def test_units_config_udev_rules_and_python_modules_are_shipped_byte_for_byte(
        built: Built) -> None:
    pairs = [(f"lib/systemd/system/{u}", f"systemd/{u}") for u in UNITS]
    pairs += [(c.lstrip("/"), c.lstrip("/")) for c in CONFFILES]
    pairs.append(("usr/lib/systemd/catalog/kmodd.catalog", "catalog/kmodd.catalog"))
    for module in (built.checkout / "kmodd").rglob("*.py"):
        source = module.relative_to(built.checkout)
        pairs.append((f"{PYTHON_DIR}/{source}", str(source)))
    different = [shipped for shipped, source in pairs
                 if (built.root / shipped).read_bytes() != (built.checkout / source).read_bytes()]
    assert different == []


def test_the_man_pages_are_the_committed_pages_gzipped_without_name_or_time(
        built: Built) -> None:
    for page in MAN_PAGES:
        data = (built.root / f"usr/share/man/{page}.gz").read_bytes()
        assert data[3:8] == bytes([0, 0, 0, 0, 0])  # no FNAME flag, mtime 0 (gzip -9n)
        assert gzip.decompress(data) == (built.checkout / "man" / Path(page).name).read_bytes()


def test_the_bash_completion_is_the_committed_script(built: Built) -> None:
    assert (built.root / COMPLETION).read_bytes() == \
        (built.checkout / "completion/kmodctl.bash").read_bytes()


def test_the_packaged_catalog_is_where_journalctl_finds_every_message_id(
        built: Built, tmp_path: Path) -> None:
    """What systemd's dpkg trigger runs, `journalctl --update-catalog`, on a copy of the
    package's /usr/lib/systemd/catalog: every MESSAGE_ID kmodd writes has an entry."""
    catalog_dir = "usr/lib/systemd/catalog"
    shutil.copytree(built.root / catalog_dir, tmp_path / catalog_dir)
    run("journalctl", f"--root={tmp_path}", "--update-catalog")
    listed = run("journalctl", f"--root={tmp_path}", "--list-catalog")
    ids = [line.split(" ", 1)[0] for line in listed.splitlines()]
    assert ids == sorted(MESSAGE_IDS.values())
    assert all(" kmodd: " in line for line in listed.splitlines())


def test_the_udev_rules_go_where_they_mask_udevs_own_module_loading(built: Built) -> None:
    """A rules file in /etc/udev/rules.d replaces udev's file of the same name in
    /lib/udev/rules.d, as the rules files themselves say."""
    for name in UDEV_MASKS:
        text = (built.root / "etc/udev/rules.d" / name).read_text()
        assert "masks " in text and f"/lib/udev/rules.d/{name}" in text
    assert not (built.root / "lib/udev").exists()


def test_md5sums_covers_every_file_but_the_conffiles_with_the_right_sums(built: Built) -> None:
    sums: dict[str, str] = {}
    for line in (built.control / "md5sums").read_text().splitlines():
        digest, path = line.split("  ", 1)
        sums[path] = digest
    files = {str(p.relative_to(built.root)) for p in built.root.rglob("*") if p.is_file()}
    assert set(sums) == files - {c.lstrip("/") for c in CONFFILES}
    wrong = [path for path, digest in sums.items()
             if hashlib.md5((built.root / path).read_bytes()).hexdigest() != digest]
    assert wrong == []


# --- the commands -------------------------------------------------------------------------


def system_python_is_recent() -> bool:
    """/usr/bin/python3, the commands' interpreter, is there and at least 3.11."""
    if not os.access("/usr/bin/python3", os.X_OK):
        return False
    check = subprocess.run(["/usr/bin/python3", "-c",
                            "import sys; sys.exit(sys.version_info < (3, 11))"], timeout=60)
    return check.returncode == 0


def run_packaged(built: Built, command: str, *args: str) -> tuple[int, str, str]:
    """Run the extracted /usr/bin/COMMAND against the extracted dist-packages: by its
    #!/usr/bin/python3 line, or with this interpreter when that Python is too old."""
    script = str(built.root / "usr/bin" / command)
    argv = [script] if system_python_is_recent() else [sys.executable, script]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KMODD_ROOT")}
    env |= {"PYTHONPATH": str(built.root / PYTHON_DIR), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([*argv, *args], capture_output=True, text=True, env=env,
                            cwd=built.root, timeout=60)
    return result.returncode, result.stdout, result.stderr


def run_checkout(built: Built, module: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KMODD_ROOT"}
    env |= {"PYTHONPATH": str(built.checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                            text=True, env=env, cwd=built.checkout, timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_the_commands_are_python3_scripts_calling_the_pyproject_entry_points(
        built: Built) -> None:
    scripts = project(built.checkout)["scripts"]
    assert isinstance(scripts, dict)
    assert sorted(scripts) == ["kmodctl", "kmodd"]
    for command, entry_point in scripts.items():
        module, function = entry_point.split(":")
        text = (built.root / "usr/bin" / command).read_text()
        assert text.startswith("#!/usr/bin/python3\n")
        assert f"\nfrom {module} import {function}\n" in text
        assert text.endswith(f"    sys.exit({function}())\n")


def test_packaged_kmodd_prints_the_same_version_as_the_checkout(built: Built) -> None:
    packaged = run_packaged(built, "kmodd", "--version")
    assert packaged == run_checkout(built, "kmodd.daemon.main", "--version")
    assert packaged == (0, f"kmodd {built.version}\n", "")


def test_packaged_kmodctl_answers_version_exactly_as_the_checkout(built: Built) -> None:
    """`kmodctl --version` (the checkout's answer, whatever it is) and `kmodctl modprobe
    --version`, which names kmodd's version."""
    packaged = run_packaged(built, "kmodctl", "--version")
    assert packaged == run_checkout(built, "kmodd.cli.kmodctl", "--version")
    modprobe = run_packaged(built, "kmodctl", "modprobe", "--version")
    assert modprobe == run_checkout(built, "kmodd.cli.kmodctl", "modprobe", "--version")
    assert modprobe[0] == 0 and f" {built.version} " in modprobe[1]


def test_importlib_metadata_finds_the_packaged_distribution_and_its_scripts(
        built: Built) -> None:
    python = "/usr/bin/python3" if system_python_is_recent() else sys.executable
    code = ("import importlib.metadata as m; d = m.distribution('kmodd'); print(d.version); "
            "print(d.locate_file('')); print(sorted((e.name, e.value) for e in d.entry_points "
            "if e.group == 'console_scripts'))")
    out = subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(built.root / PYTHON_DIR)}, cwd=built.root,
                         timeout=60).stdout
    scripts = project(built.checkout)["scripts"]
    assert isinstance(scripts, dict)
    assert out.splitlines() == [built.version, str(built.root / PYTHON_DIR),
                                str(sorted(scripts.items()))]


# --- the maintainer scripts ----------------------------------------------------------------


def test_the_maintainer_scripts_are_the_repositorys_executable_posix_sh_with_set_e(
        built: Built) -> None:
    for name in MAINTAINER_SCRIPTS:
        script = built.control / name
        text = script.read_text()
        assert script.stat().st_mode & 0o777 == 0o755, name
        assert text.startswith("#!/bin/sh\n"), name
        assert "\nset -e\n" in text, name
        assert text == (built.checkout / "packaging/maintainer-scripts" / name).read_text()
        syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert (syntax.returncode, syntax.stderr) == (0, ""), name


STUB = """#!/bin/sh
echo "${0##*/} $*" >> /calls
if [ "$1 $2" = "--quiet was-enabled" ]; then exit "${WAS_ENABLED:-0}"; fi
exit 0
"""


@dataclass(frozen=True)
class Outcome:
    calls: list[str]  # the systemd and Python helpers, as they were called
    rules: dict[str, str]  # /etc/udev/rules.d afterwards


@pytest.fixture(scope="module")
def chroot_works(tmp_path_factory: pytest.TempPathFactory) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("running maintainer scripts in a scratch root needs root and unshare")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")


def run_maintainer_scripts(built: Built, tmp_path: Path, steps: Sequence[Sequence[str]], *,
                           systemd: bool, rules: Mapping[str, str] | None = None,
                           was_enabled: int = 0) -> Outcome:
    """Run each step (`script arg...`) chrooted into a scratch root: the host's /usr
    read-only, a private /etc/udev/rules.d with `rules`, /run/systemd/system if `systemd`,
    and logging stubs for deb-systemd-helper, deb-systemd-invoke, systemctl, py3compile,
    py3clean."""
    root = tmp_path / "root"
    for name in ("usr", "dev", "maint", "stubs", "etc/udev/rules.d", "run", "tmp"):
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
    for name, text in (rules or {}).items():
        (root / "etc/udev/rules.d" / name).write_text(text)
    for stub in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl", "py3compile",
                 "py3clean"):
        (root / "stubs" / stub).write_text(STUB)
        (root / "stubs" / stub).chmod(0o755)
    for name in MAINTAINER_SCRIPTS:
        shutil.copy2(built.control / name, root / "maint" / name)
    (root / "calls").touch()

    setup = " && ".join(
        [f'mount --bind {m} "$R{m}" && mount -o remount,bind,ro "$R{m}"' for m in mounts]
        + ['mount --bind /dev/null "$R/dev/null"']
    )
    env = {"PATH": "/stubs:/usr/sbin:/usr/bin:/sbin:/bin", "WAS_ENABLED": str(was_enabled)}
    for step in steps:
        script, *args = step
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'{setup} && exec chroot "$R" /maint/"$0" "$@"', script, *args],
            env={**env, "R": str(root)}, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (0, ""), step
    return Outcome(
        calls=(root / "calls").read_text().splitlines(),
        rules={p.name: p.read_text() for p in sorted((root / "etc/udev/rules.d").iterdir())},
    )


def enable_calls(units: Sequence[str] = UNITS) -> Iterator[str]:
    for unit in units:
        yield f"deb-systemd-helper --quiet was-enabled {unit}"
        yield f"deb-systemd-helper enable {unit}"


@pytest.mark.usefixtures("chroot_works")
def test_a_first_install_enables_every_shipped_unit_and_starts_kmodd(
        built: Built, tmp_path: Path) -> None:
    outcome = run_maintainer_scripts(built, tmp_path, [["postinst", "configure", ""]],
                                     systemd=True)
    assert outcome.calls == [
        "py3compile -p kmodd",
        *enable_calls(),
        "systemctl --system daemon-reload",
        "deb-systemd-invoke start kmodd-kernel.socket kmodd.socket",
        "deb-systemd-invoke start kmodd.service",
    ]
    shipped = {p.name for p in (built.root / "lib/systemd/system").iterdir()}
    assert shipped == set(UNITS)


@pytest.mark.usefixtures("chroot_works")
def test_an_install_without_running_systemd_enables_the_units_but_starts_nothing(
        built: Built, tmp_path: Path) -> None:
    outcome = run_maintainer_scripts(built, tmp_path, [["postinst", "configure", ""]],
                                     systemd=False)
    assert outcome.calls == ["py3compile -p kmodd", *enable_calls()]


@pytest.mark.usefixtures("chroot_works")
def test_an_upgrade_restarts_the_daemon_but_never_the_sockets_that_queue_uevents(
        built: Built, tmp_path: Path) -> None:
    outcome = run_maintainer_scripts(
        built, tmp_path, [["prerm", "upgrade", "0.1.1"], ["postinst", "configure", "0.0.9"]],
        systemd=True)
    assert outcome.calls == [
        "py3clean -p kmodd",
        "py3compile -p kmodd",
        *enable_calls(),
        "systemctl --system daemon-reload",
        "deb-systemd-invoke start kmodd-kernel.socket kmodd.socket",
        "deb-systemd-invoke restart kmodd.service",
    ]


@pytest.mark.usefixtures("chroot_works")
def test_units_the_admin_disabled_stay_disabled_on_upgrade(built: Built, tmp_path: Path) -> None:
    outcome = run_maintainer_scripts(built, tmp_path, [["postinst", "configure", "0.0.9"]],
                                     systemd=False, was_enabled=1)
    assert not any(call.startswith("deb-systemd-helper enable") for call in outcome.calls)
    assert [c for c in outcome.calls if "update-state" in c] == [
        f"deb-systemd-helper update-state {unit}" for unit in UNITS]


@pytest.mark.usefixtures("chroot_works")
def test_removal_stops_kmodd_and_gives_module_loading_back_to_udev(
        built: Built, tmp_path: Path) -> None:
    rules = {name: f"# edited {name}\n" for name in UDEV_MASKS} | {"99-local.rules": "# mine\n"}
    outcome = run_maintainer_scripts(
        built, tmp_path, [["prerm", "remove"], ["postrm", "remove"]], systemd=True, rules=rules)
    assert outcome.calls == [
        "deb-systemd-invoke stop kmodd-kernel.socket kmodd.socket kmodd.service",
        "py3clean -p kmodd",
        "systemctl --system daemon-reload",
    ]
    # udev reads only *.rules: the renamed masks no longer hide udev's own files.
    assert outcome.rules == {"99-local.rules": "# mine\n"} | {
        f"{name}.kmodd-removed": f"# edited {name}\n" for name in UDEV_MASKS}


@pytest.mark.usefixtures("chroot_works")
def test_installing_again_after_removal_brings_back_the_udev_rules_with_the_admins_edits(
        built: Built, tmp_path: Path) -> None:
    rules = {f"{name}.kmodd-removed": f"# edited {name}\n" for name in UDEV_MASKS}
    outcome = run_maintainer_scripts(built, tmp_path, [["postinst", "configure", ""]],
                                     systemd=False, rules=rules)
    assert outcome.rules == {name: f"# edited {name}\n" for name in UDEV_MASKS}


@pytest.mark.usefixtures("chroot_works")
def test_purge_forgets_the_units_and_deletes_the_renamed_udev_rules(
        built: Built, tmp_path: Path) -> None:
    rules = {f"{name}.kmodd-removed": "#\n" for name in UDEV_MASKS} | {"99-local.rules": "#\n"}
    outcome = run_maintainer_scripts(built, tmp_path, [["postrm", "purge"]], systemd=False,
                                     rules=rules)
    assert outcome.calls == [f"deb-systemd-helper purge {unit}" for unit in UNITS]
    assert outcome.rules == {"99-local.rules": "#\n"}


# --- the build itself ------------------------------------------------------------------------


def test_two_builds_of_one_checkout_are_byte_identical(built: Built, tmp_path: Path) -> None:
    result = build_deb(built.checkout, "--out", str(tmp_path), "--maintainer", MAINTAINER)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / built.deb.name).read_bytes() == built.deb.read_bytes()


def test_the_default_output_is_dist_which_git_ignores(built: Built, tmp_path: Path) -> None:
    checkout = snapshot(tmp_path / "checkout")
    result = build_deb(checkout, "--maintainer", MAINTAINER)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{checkout / 'dist' / built.deb.name}\n"
    assert sorted(p.name for p in (checkout / "dist").iterdir()) == [built.deb.name]
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q",
                              f"dist/{built.deb.name}"], timeout=60)
    assert ignored.returncode == 0


def test_the_maintainer_defaults_to_debfullname_and_debemail(built: Built, tmp_path: Path) -> None:
    environ = dict(os.environ, DEBFULLNAME="Ada Admin", DEBEMAIL="ada@example.org")
    result = build_deb(built.checkout, "--out", str(tmp_path), environ=environ)
    assert result.returncode == 0, result.stderr
    maintainer = run("dpkg-deb", "--field", tmp_path / built.deb.name, "Maintainer")
    assert maintainer == "Ada Admin <ada@example.org>\n"


def test_a_unit_the_maintainer_scripts_do_not_know_stops_the_build(
        built: Built, tmp_path: Path) -> None:
    checkout = snapshot(tmp_path / "checkout")
    (checkout / "systemd/kmodd-extra.socket").write_text("[Socket]\n")
    result = build_deb(checkout, "--out", str(tmp_path / "out"), "--maintainer", MAINTAINER)
    assert result.returncode == 1
    assert "maintainer-scripts/postinst: UNITS" in result.stderr
    assert "kmodd-extra.socket" in result.stderr
    assert not (tmp_path / "out" / built.deb.name).exists()


def test_a_runtime_dependency_without_a_known_debian_package_stops_the_build(
        built: Built, tmp_path: Path) -> None:
    checkout = snapshot(tmp_path / "checkout")
    pyproject = checkout / "pyproject.toml"
    text = pyproject.read_text()
    assert "dependencies = [\n" in text
    pyproject.write_text(text.replace("dependencies = [\n", 'dependencies = [\n    "frob>=1",\n'))
    result = build_deb(checkout, "--out", str(tmp_path / "out"), "--maintainer", MAINTAINER)
    assert result.returncode == 1
    assert "'frob'" in result.stderr and "DEBIAN_PACKAGES" in result.stderr
    assert not (tmp_path / "out" / built.deb.name).exists()


# --- lintian --------------------------------------------------------------------------------


def test_lintian_finds_no_error_and_overrides_only_the_udev_masks_in_etc(built: Built) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (apt-get install lintian)")
    # With --show-overrides, lintian's exit status counts the overridden errors too: the
    # verdict is read from the tags it prints.
    result = subprocess.run(["lintian", "--allow-root", "--show-overrides", str(built.deb)],
                            capture_output=True, text=True, timeout=600)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[A-Z]: ", line)]
    assert result.stderr == ""
    assert [t for t in tags if t.startswith("E: ")] == []
    assert [t for t in tags if t.startswith("O: ")] == [
        f"O: kmodd: udev-rule-in-etc [etc/udev/rules.d/{name}]" for name in UDEV_MASKS]


# --- the real dpkg ---------------------------------------------------------------------------

PROBE = r"""
for f in /etc/kmodd.conf /etc/udev/rules.d/80-debian-compat.rules \
         /etc/udev/rules.d/80-debian-compat.rules.kmodd-removed \
         /etc/udev/rules.d/80-drivers.rules /etc/udev/rules.d/80-drivers.rules.kmodd-removed \
         /etc/systemd/system/sockets.target.wants/kmodd-kernel.socket \
         /etc/systemd/system/sockets.target.wants/kmodd.socket \
         /etc/systemd/system/sysinit.target.wants/kmodd.service \
         /usr/lib/python3/dist-packages/kmodd /usr/lib/python3/dist-packages/kmodd/__init__.py \
         /usr/lib/python3/dist-packages/kmodd/__pycache__; do
    if [ -e "$f" ] || [ -L "$f" ]; then echo "$f"; fi
done
dpkg-query -W -f='status ${db:Status-Abbrev}\n' kmodd 2>/dev/null || echo "status unknown"
"""


@pytest.fixture
def in_overlay(built: Built, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Run a shell command chrooted into an overlay of this system: what dpkg writes stays
    in the test's upper directory."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("dpkg in an overlay of this system needs root and unshare")
    overlay = tmp_path / "overlay"
    for name in ("upper", "work", "merged"):
        (overlay / name).mkdir(parents=True)
    enter = (
        'mount -t overlay overlay -o "lowerdir=/,upperdir=$O/upper,workdir=$O/work" '
        '"$O/merged" || exit 77; touch "$O/merged/dev/null" && '
        'mount --bind /dev/null "$O/merged/dev/null" && cp "$DEB" "$O/merged/tmp/kmodd.deb" && '
        'exec chroot "$O/merged" /bin/sh -ec "$1"'
    )

    def run_in(command: str) -> str:
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", enter, "sh", command],
            env={"O": str(overlay), "DEB": str(built.deb), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                 "LC_ALL": "C"}, capture_output=True, text=True, timeout=600)
        if result.returncode == 77:
            pytest.skip(f"no overlay mount of / here: {result.stderr.strip()}")
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    if run_in("dpkg-query -W kmodd >/dev/null 2>&1 && echo installed || true"):
        pytest.skip("kmodd is installed on this system")
    yield run_in


def test_with_the_real_dpkg_remove_hands_module_loading_back_and_reinstall_takes_it_again(
        in_overlay: Callable[[str], str]) -> None:
    """dpkg -i, an admin's edit, dpkg -r, dpkg -i again, dpkg -P; the dependencies are
    forced (they need not be installed here) and no systemd runs."""
    conffiles = [*CONFFILES]
    links = ["/etc/systemd/system/sockets.target.wants/kmodd-kernel.socket",
             "/etc/systemd/system/sockets.target.wants/kmodd.socket",
             "/etc/systemd/system/sysinit.target.wants/kmodd.service"]
    package = [f"/{PYTHON_DIR}/kmodd", f"/{PYTHON_DIR}/kmodd/__init__.py",
               f"/{PYTHON_DIR}/kmodd/__pycache__"]
    installed = [*conffiles, *links, *package, "status ii "]
    install = "dpkg -i --force-depends /tmp/kmodd.deb >/dev/null 2>&1"
    assert in_overlay(f"{install}\n{PROBE}").splitlines() == installed

    edit = 'echo "# the admin was here" >> /etc/udev/rules.d/80-drivers.rules'
    removed = ["/etc/kmodd.conf", *(f"{c}.kmodd-removed" for c in conffiles[1:]), *links,
               "status rc "]
    assert in_overlay(f"{edit}\ndpkg -r kmodd >/dev/null\n{PROBE}").splitlines() == removed

    again = in_overlay(f"{install}\n{PROBE}\ntail -n1 /etc/udev/rules.d/80-drivers.rules")
    assert again.splitlines() == [*installed, "# the admin was here"]

    purged = in_overlay(f"dpkg -P kmodd >/dev/null 2>&1\n{PROBE}").splitlines()
    assert purged in (["status un "], ["status unknown"])
