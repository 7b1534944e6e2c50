"""Build (once) and cache the guest: ELF vmlinux, base initramfs, and a per-checkout overlay.

Base (slow, ~1 min, cached under `$KMODD_E2E_CACHE`, default `/var/cache/kmodd-e2e`, keyed by
the kernel package, the apt package list, the guest's Python requirements and BUILDER_VERSION):
  * the pinned Debian kernel package (`tests/kerneltree.py` names it in PINNED_PACKAGE,
    downloads and unpacks it); the bzImage's xz payload is unpacked to the ELF `vmlinux`
    that QEMU boots through its PVH entry (3 s faster than the bzImage under TCG);
  * `debootstrap --variant=minbase` of Debian 12 with GUEST_PACKAGES, kmodd's Python
    requirements installed by pip into /usr/local, and all modules of the kernel in
    /usr/lib/modules, indexed by the guest's own depmod;
  * packed as one uncompressed newc cpio (compression makes TCG boots slower).

Overlay (seconds, keyed by a hash of the checkout's files and of `guest/`):
  * `/init` and `/vm/*.py` from `guest/`;
  * kmodd installed from the checkout with `pip install --no-deps --target`, entry points in
    `/usr/bin` with Debian's `/usr/bin/python3` as interpreter, but the daemon where the unit's
    ExecStart= looks (`/usr/sbin`, as the Debian package installs it);
  * the checkout's units (`systemd/*`) in `/usr/lib/systemd/system` and everything under the
    checkout's `etc/` as the same path under the guest's `/etc`, when those exist, as the
    Debian package ships them; the units enabled as the package's postinst enables them
    (`deb-systemd-helper enable`: the [Install] section's symlinks in /etc/systemd/system);
  * for each udev rules file that the package diverts (debian/kmodd.preinst), a file of the
    same name in `/etc/udev/rules.d`, which hides udev's as the diversion does (an archive part
    can add files, not rename the base's): the package's own file of that name, or one with a
    comment only. udev loads no module; each starts with "# Installed by kmodd", which the
    udev anchor's `coldplug.unmask_udev_rules` removes to get udev as shipped;
  * the test agent's unit (`guest/*.service`) in `/etc/systemd/system`, enabled: it is what
    reaches the agent when systemd is PID 1 (machine.Init.SYSTEMD); unused otherwise.
`build_overlay(kmodd=False)` makes the overlay without kmodd (the guest files and the agent's
unit only): a Debian system on which the package is not installed yet.
The initrd a VM boots is base + overlay, concatenated (each part 512-byte aligned).

A reboot that keeps the root file system (`with_state`): the guest's root is the initramfs, so
what a boot changed (`STATE_CAPTURE` lists it: the paths it wrote, and those it deleted) is
carried into the next boot as one more archive part, `/vm/state/NN.tar.gz` and `NN.deleted`,
which `guest/init` applies in order before anything else runs.

Run as a script (`python3 tests/e2e/vm build`) it builds or reuses everything and prints paths.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from stat import S_IFDIR, S_IFREG
from typing import Any

from tests.e2e.vm import cpio
from tests.e2e.vm.unit import parse_sections

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_DIR = os.path.join(HERE, "guest")
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TESTS_DIR = os.path.join(REPO, "tests")
# The kmodd checkout that goes into the guest (another worktree's, to try its kmodd here).
CHECKOUT = os.path.abspath(os.environ.get("KMODD_E2E_CHECKOUT", REPO))

CACHE = os.environ.get("KMODD_E2E_CACHE", "/var/cache/kmodd-e2e")
# Bump when the build steps change in a way the other key parts do not show.
BUILDER_VERSION = "2"
SUITE = "bookworm"
MIRROR = os.environ.get("KMODD_E2E_MIRROR", "http://deb.debian.org/debian")
GUEST_PACKAGES = (
    "python3",          # 3.11.2: kmodd and the agent
    "python3-systemd",  # journal bindings (a C extension: from apt, not pip)
    # The Debian package's Depends (debian/control: what kmodd imports), so that
    # `apt install ./kmodd_*.deb` needs no network in the guest.
    "python3-zstandard",
    "python3-cffi-backend",  # provides what python3-zstandard needs (debootstrap does not
                             # resolve virtual packages)
    "kmod",             # modprobe & co. for udev and for comparisons
    "udev",             # the anchor: systemd-udevd + its rules
    "systemd",          # systemd-journald (started standalone) and systemctl's tools
    "procps",
    "iproute2",
    "pciutils",
)
GUEST_PYTHON = "3.11"
GUEST_SITE = f"usr/local/lib/python{GUEST_PYTHON}/dist-packages"
GUEST_PYTHON_BIN = "/usr/bin/python3"
# Trimmed from the rootfs: they only cost boot time (the kernel copies every byte into tmpfs).
TRIM = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
    "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat",
)
# A fixed machine id: journald needs one, and a fixed one keeps the image reproducible.
MACHINE_ID = "6b6d6f6464653265657465737476306d\n"
UNIT_SOURCE = "systemd/kmodd.service"
UNITS_SOURCE = "systemd"
UNIT_DIR = "usr/lib/systemd/system"  # /lib/systemd/system, where the package puts units
UNIT_GUEST = f"{UNIT_DIR}/kmodd.service"
LOCAL_UNIT_DIR = "etc/systemd/system"  # the admin's units and every unit's enablement links
# [Install] keys and the directory suffix of the link each one makes (as `systemctl enable`).
INSTALL_LINKS = {"WantedBy": ".wants", "RequiredBy": ".requires", "UpheldBy": ".upholds"}
ETC_SOURCE = "etc"
# udev's rules files the Debian package diverts (its preinst's DIVERTED=); the package's own
# file of such a name is debian/kmodd.<NAME>.udev (dh_installudev's --name: the name without
# its priority and suffix). The overlay hides udev's with same-name files in UDEV_MASK_DIR.
PREINST = "debian/kmodd.preinst"
UDEV_MASK_DIR = "etc/udev/rules.d"
UDEV_MASK_MARK = "# Installed by kmodd"  # guest/coldplug.py's KMODD_MARK
# What of the checkout goes into the overlay (hashed to decide when to rebuild it).
CHECKOUT_PARTS = ("pyproject.toml", "README.md", "kmodd", "systemd", "etc", "debian")
KEEP_INITRDS = 3
# Bump when the way the overlay is built changes (its inputs' hashes do not show that); unlike
# BUILDER_VERSION it leaves the base image, a minute to rebuild, alone.
OVERLAY_VERSION = "3"
# Bump when the way base and overlay are joined changes (the parts themselves stay valid).
INITRD_FORMAT = 2

Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BaseImage:
    key: str
    dir: str
    kver: str
    kernel_package: str
    vmlinux: str
    cpio: str
    rootfs: str

    @property
    def manifest(self) -> dict[str, object]:
        with open(os.path.join(self.dir, "manifest.json")) as f:
            result: dict[str, object] = json.load(f)
        return result


@dataclass(frozen=True)
class Overlay:
    key: str
    cpio: str
    has_kmodd: bool  # the checkout installed (its package is in the guest's site-packages)
    has_unit: bool   # systemd/kmodd.service was copied to UNIT_GUEST


@contextmanager
def _locked(name: str) -> Iterator[None]:
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], log_file: str | None = None, **kw: object) -> None:
    """Run a build step; on failure raise with the tail of its output."""
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         **kw)  # type: ignore[call-overload]
    if log_file:
        with open(log_file, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{out.stdout}\n")
    if out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-30:])
        raise RuntimeError(f"{argv[0]} failed (exit {out.returncode}):\n{tail}")


def _kernel_tree() -> Any:
    from tests import kerneltree

    return kerneltree.debian_kernel_tree()


def guest_requirements() -> list[str]:
    """kmodd's runtime requirements, as pyproject.toml declares them (installed in the base)."""
    with open(os.path.join(CHECKOUT, "pyproject.toml"), "rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    return sorted(deps)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the ELF kernel inside an x86 bzImage (xz payload; boot protocol >= 2.08)."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage: no 'HdrS' boot header at 0x202")
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start:start + payload_length]
    if not payload.startswith(b"\xfd7zXZ\x00"):
        raise ValueError(f"bzImage payload at {start:#x} is not xz (magic {payload[:6]!r})")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if not elf.startswith(b"\x7fELF"):
        raise ValueError("bzImage payload did not unpack to an ELF file")
    return elf


def _base_key(package: str, deb: str) -> str:
    spec = {
        "builder": BUILDER_VERSION, "kernel": package, "deb": os.path.basename(deb),
        "packages": GUEST_PACKAGES, "python": guest_requirements(), "suite": SUITE,
        "mirror": MIRROR, "trim": TRIM,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_base(log: Log = _stderr_log) -> BaseImage:
    """Return the cached base image, building it first if its inputs changed."""
    tree = _kernel_tree()
    with open(os.path.join(tree.root, ".complete")) as f:
        deb = f.read().strip()
    key = _base_key(tree.package, deb)
    d = os.path.join(CACHE, f"base-{key}")
    img = BaseImage(key=key, dir=d, kver=tree.kver, kernel_package=tree.package,
                    vmlinux=os.path.join(d, "vmlinux"), cpio=os.path.join(d, "base.cpio"),
                    rootfs=os.path.join(d, "rootfs"))
    with _locked("base"):
        if os.path.exists(os.path.join(d, "manifest.json")):
            return img
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        steps: dict[str, float] = {}
        buildlog = os.path.join(d, "build.log")

        t = time.monotonic()
        log(f"kernel {tree.package}: extracting vmlinux")
        with open(os.path.join(tree.root, "boot", f"vmlinuz-{tree.kver}"), "rb") as f:
            elf = extract_vmlinux(f.read())
        with open(img.vmlinux + ".tmp", "wb") as f:
            f.write(elf)
        os.replace(img.vmlinux + ".tmp", img.vmlinux)
        steps["kernel"] = time.monotonic() - t

        t = time.monotonic()
        log(f"debootstrap {SUITE} minbase + {' '.join(GUEST_PACKAGES)} (~40 s)")
        debs = os.path.join(CACHE, "debootstrap-debs")
        os.makedirs(debs, exist_ok=True)
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(GUEST_PACKAGES)}",
              f"--cache-dir={debs}", SUITE, img.rootfs, MIRROR], buildlog)
        steps["debootstrap"] = time.monotonic() - t

        t = time.monotonic()
        reqs = guest_requirements()
        log(f"pip: {' '.join(reqs)}")
        site = os.path.join(img.rootfs, GUEST_SITE)
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "--no-compile", "--only-binary=:all:", "--python-version", GUEST_PYTHON,
              "--target", site, *reqs], buildlog)
        shutil.rmtree(os.path.join(site, "bin"), ignore_errors=True)
        _run(["chroot", img.rootfs, "python3", "-m", "compileall", "-q", "/" + GUEST_SITE],
             buildlog)
        steps["pip"] = time.monotonic() - t

        t = time.monotonic()
        log("modules + depmod")
        moddir = os.path.join(img.rootfs, "usr/lib/modules", tree.kver)
        shutil.copytree(tree.moddir, moddir, symlinks=True)
        _run(["chroot", img.rootfs, "depmod", "-a", tree.kver], buildlog)
        with open(os.path.join(img.rootfs, "etc/machine-id"), "w") as f:
            f.write(MACHINE_ID)
        with open(os.path.join(img.rootfs, "etc/hostname"), "w") as f:
            f.write("kmodd-e2e\n")
        for rel in TRIM:
            p = os.path.join(img.rootfs, rel)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
                os.makedirs(p)
            elif os.path.exists(p):
                os.unlink(p)
        steps["modules"] = time.monotonic() - t

        t = time.monotonic()
        log("packing base.cpio")
        with open(img.cpio + ".tmp", "wb") as f:
            w = cpio.Writer(f)
            w.add_tree(img.rootfs)
            w.close()
        os.replace(img.cpio + ".tmp", img.cpio)
        steps["pack"] = time.monotonic() - t

        versions = subprocess.run(
            ["chroot", img.rootfs, "dpkg-query", "-W", "-f", "${Package}=${Version}\n",
             *[p for p in GUEST_PACKAGES]], capture_output=True, text=True).stdout.split()
        manifest = {
            "key": key, "kver": tree.kver, "kernel_package": tree.package,
            "kernel_deb": os.path.basename(deb), "packages": versions, "python": reqs,
            "builder": BUILDER_VERSION, "cpio_bytes": os.path.getsize(img.cpio),
            "modules": sum(1 for _ in glob.iglob(f"{moddir}/**/*.ko*", recursive=True)),
            "build_seconds": {k: round(v, 1) for k, v in steps.items()},
        }
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        log(f"base image {key} ready: {manifest['build_seconds']}")
        return img


def _hash_checkout(h: hashlib._Hash, root: str, parts: tuple[str, ...]) -> None:
    for part in parts:
        top = os.path.join(root, part)
        if os.path.isfile(top):
            files = [top]
        elif os.path.isdir(top):
            files = []
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                files += [os.path.join(dirpath, n) for n in sorted(filenames)
                          if not n.endswith(".pyc")]
        else:
            continue
        for p in files:
            h.update(os.path.relpath(p, root).encode() + b"\0")
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())


def script_dirs(checkout: str) -> dict[str, str]:
    """Script name -> the guest directory it goes to, when not usr/bin: the daemon's is the
    directory of kmodd.service's ExecStart= (the unit is the one that runs it)."""
    path = os.path.join(checkout, UNIT_SOURCE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        service = parse_sections(f.read(), UNIT_SOURCE).get("Service", [])
    dirs = {}
    for _lineno, key, value in service:
        if key == "ExecStart" and value.split():
            command = value.split()[0].lstrip("@-:+!")
            dirs[os.path.basename(command)] = os.path.dirname(command).lstrip("/")
    return dirs


def _install_checkout(checkout: str, dest: str, log: Log) -> bool:
    """pip-install the checkout into dest/GUEST_SITE, scripts into dest/usr/bin (the daemon
    into its unit's directory)."""
    if not os.path.exists(os.path.join(checkout, "pyproject.toml")):
        return False
    with tempfile.TemporaryDirectory(prefix="kmodd-src-") as src:
        # A copy, so that the build's egg-info and build/ do not land in the checkout.
        for part in ("pyproject.toml", "README.md", "kmodd"):
            p = os.path.join(checkout, part)
            if os.path.isdir(p):
                shutil.copytree(p, os.path.join(src, part),
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif os.path.isfile(p):
                shutil.copy2(p, src)
        site = os.path.join(dest, GUEST_SITE)
        log("pip install --no-deps --target <overlay> <checkout>")
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "--no-deps", "--target", site, src])
    bindir = os.path.join(site, "bin")
    dirs = script_dirs(checkout)
    if os.path.isdir(bindir):
        for name in os.listdir(bindir):
            with open(os.path.join(bindir, name), "rb") as f:
                lines = f.read().split(b"\n", 1)
            # pip wrote the host interpreter's path; the guest runs Debian's python3.
            body = b"#!" + GUEST_PYTHON_BIN.encode() + b"\n" + (lines[1] if len(lines) > 1 else b"")
            target = os.path.join(dest, dirs.get(name, "usr/bin"), name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(body)
            os.chmod(target, 0o755)
        shutil.rmtree(bindir)
    return os.path.isdir(os.path.join(site, "kmodd"))


def diverted_udev_rules(checkout: str) -> list[str]:
    """The udev rules files the Debian package's preinst diverts (its DIVERTED= line)."""
    path = os.path.join(checkout, PREINST)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        for line in f:
            if line.startswith("DIVERTED="):
                return line.split("=", 1)[1].strip().strip('"').split()
    raise ValueError(f"{PREINST}: no DIVERTED= line")


def _install_udev_rules(checkout: str, tree: str) -> None:
    """What the package's diversions leave in udev's place: its own file, or a comment."""
    for name in diverted_udev_rules(checkout):
        stem = name.split("-", 1)[1].removesuffix(".rules")
        own = os.path.join(checkout, f"debian/kmodd.{stem}.udev")
        text = (f"{UDEV_MASK_MARK}'s e2e overlay: hides udev's {name} as the package's "
                f"diversion does ({PREINST}).\n")
        if os.path.isfile(own):
            with open(own) as f:
                text = f.read()
        if not text.startswith(UDEV_MASK_MARK):
            raise ValueError(f"{own}: does not start with {UDEV_MASK_MARK!r}")
        os.makedirs(os.path.join(tree, UDEV_MASK_DIR), exist_ok=True)
        with open(os.path.join(tree, UDEV_MASK_DIR, name), "w") as f:
            f.write(text)


def build_overlay(checkout: str = CHECKOUT, log: Log = _stderr_log,
                  kmodd: bool = True) -> Overlay:
    """Return the cached overlay for the checkout's current files, building it if needed.

    Without `kmodd`: the guest files and the agent's unit only.
    """
    h = hashlib.sha256(BUILDER_VERSION.encode())
    h.update(OVERLAY_VERSION.encode())
    _hash_checkout(h, HERE, ("guest",))
    if kmodd:
        _hash_checkout(h, checkout, CHECKOUT_PARTS)
    else:
        h.update(b"without kmodd")
    key = h.hexdigest()[:16]
    d = os.path.join(CACHE, "overlays")
    path = os.path.join(d, f"{key}.cpio")
    meta_path = os.path.join(d, f"{key}.json")
    with _locked("overlay"):
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            return Overlay(key=key, cpio=path, **meta)
        os.makedirs(d, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kmodd-overlay-") as tree:
            os.makedirs(os.path.join(tree, "vm"))
            for name in os.listdir(GUEST_DIR):
                src = os.path.join(GUEST_DIR, name)
                if name == "__pycache__" or not os.path.isfile(src) or name.endswith(".service"):
                    continue
                dst = os.path.join(tree, "init" if name == "init" else f"vm/{name}")
                shutil.copy(src, dst)
                os.chmod(dst, 0o755)
            has_kmodd = has_unit = False
            if kmodd:
                has_kmodd = _install_checkout(checkout, tree, log)
                etc = os.path.join(checkout, ETC_SOURCE)
                if os.path.isdir(etc):
                    shutil.copytree(etc, os.path.join(tree, "etc"))
                _install_udev_rules(checkout, tree)
            has_unit = _install_units(checkout, tree, kmodd)
            with open(path + ".tmp", "wb") as f:
                w = cpio.Writer(f)
                # The overlay's parents (usr, usr/local, ...) exist in the base already; the
                # kernel keeps existing directories when a later archive names them again.
                w.add_tree(tree)
                w.close()
            os.replace(path + ".tmp", path)
        meta = {"has_kmodd": has_kmodd, "has_unit": has_unit}
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        log(f"overlay {key}: kmodd installed: {has_kmodd}, unit: {has_unit}")
        return Overlay(key=key, cpio=path, **meta)


def enable_unit(root: str, unit_dir: str, name: str, _seen: set[str] | None = None) -> list[str]:
    """Enable `name` (a file in root/unit_dir) as `deb-systemd-helper enable` would.

    Reads its [Install] section: WantedBy=/RequiredBy=/UpheldBy= make a link in
    root/etc/systemd/system/TARGET.wants (.requires, .upholds) to /unit_dir/NAME, Alias= a
    link named after the alias, Also= enables those units too. Returns the links made,
    relative to root. Template units are not supported (none is shipped); an [Install]
    key this does not know is an error rather than an enablement left out.
    """
    seen = set() if _seen is None else _seen
    if name in seen:
        return []
    seen.add(name)
    if "@" in name:
        raise ValueError(f"{unit_dir}/{name}: enabling template units is not supported")
    with open(os.path.join(root, unit_dir, name)) as f:
        install = parse_sections(f.read(), name).get("Install", [])
    target = f"/{unit_dir}/{name}"
    made: list[str] = []
    also: list[str] = []
    for lineno, key, value in install:
        if key in INSTALL_LINKS:
            links = [f"{LOCAL_UNIT_DIR}/{w}{INSTALL_LINKS[key]}/{name}" for w in value.split()]
        elif key == "Alias":
            links = [f"{LOCAL_UNIT_DIR}/{a}" for a in value.split()]
        elif key == "Also":
            also += value.split()
            continue
        else:
            raise ValueError(f"{unit_dir}/{name}:{lineno}: [Install] {key}= is not supported")
        for rel in links:
            os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
            link = os.path.join(root, rel)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
            made.append(rel)
    for other in also:
        made += enable_unit(root, unit_dir, other, seen)
    return made


def _install_units(checkout: str, tree: str, kmodd: bool = True) -> bool:
    """The checkout's units (with `kmodd`) and the agent's, enabled; whether kmodd.service was
    installed."""
    source = os.path.join(checkout, UNITS_SOURCE)
    shipped = sorted(os.listdir(source)) if kmodd and os.path.isdir(source) else []
    os.makedirs(os.path.join(tree, UNIT_DIR), exist_ok=True)
    units = []
    for name in shipped:
        if os.path.isdir(os.path.join(source, name)):  # another unit's drop-ins (NAME.d/)
            shutil.copytree(os.path.join(source, name), os.path.join(tree, UNIT_DIR, name))
            for entry in os.listdir(os.path.join(tree, UNIT_DIR, name)):
                os.chmod(os.path.join(tree, UNIT_DIR, name, entry), 0o644)
            continue
        shutil.copy(os.path.join(source, name), os.path.join(tree, UNIT_DIR, name))
        os.chmod(os.path.join(tree, UNIT_DIR, name), 0o644)
        units.append(name)
    # The postinst enables every unit the package ships (its UNITS= is checked against them).
    for name in units:
        enable_unit(tree, UNIT_DIR, name)
    agent_units = sorted(n for n in os.listdir(GUEST_DIR) if n.endswith(".service"))
    os.makedirs(os.path.join(tree, LOCAL_UNIT_DIR), exist_ok=True)
    for name in agent_units:
        shutil.copy(os.path.join(GUEST_DIR, name), os.path.join(tree, LOCAL_UNIT_DIR, name))
        os.chmod(os.path.join(tree, LOCAL_UNIT_DIR, name), 0o644)
        enable_unit(tree, LOCAL_UNIT_DIR, name)
    return kmodd and os.path.isfile(os.path.join(checkout, UNIT_SOURCE))


def initrd_path(base: BaseImage, overlay: Overlay) -> str:
    """Where the cache keeps the initrd of `base` and `overlay`."""
    return os.path.join(CACHE, "initrd", f"{base.key}-{overlay.key}-f{INITRD_FORMAT}.img")


def initrd(base: BaseImage, overlay: Overlay) -> str:
    """The initrd to boot: base.cpio + overlay, cached by both keys."""
    path = initrd_path(base, overlay)
    d = os.path.dirname(path)
    with _locked("initrd"):
        if os.path.exists(path):
            os.utime(path)
            return path
        os.makedirs(d, exist_ok=True)
        cpio.concatenate(path, [base.cpio, overlay.cpio])
        # Each initrd is as big as the base: keep only the few most recently used.
        old = sorted(glob.glob(os.path.join(d, "*.img")), key=os.path.getmtime)[:-KEEP_INITRDS]
        for p in old:
            os.unlink(p)
        return path


@dataclass(frozen=True)
class Guest:
    """Everything a VM needs to boot: kernel, initrd, and what went into them."""

    base: BaseImage
    overlay: Overlay
    initrd: str


def build(checkout: str = CHECKOUT, log: Log = _stderr_log) -> Guest:
    """Build or reuse base and overlay; return the bootable pair."""
    base = build_base(log)
    overlay = build_overlay(checkout, log)
    return Guest(base=base, overlay=overlay, initrd=initrd(base, overlay))


def build_without_kmodd(log: Log = _stderr_log) -> Guest:
    """The base with the agent but not kmodd: a Debian 12 on which kmodd is not installed."""
    base = build_base(log)
    overlay = build_overlay(log=log, kmodd=False)
    return Guest(base=base, overlay=overlay, initrd=initrd(base, overlay))


# In the guest: what changed in the root file system since STATE_MARK was run (`find -cnewer`
# sees written, created and renamed files: rename changes the inode's ctime), and what was
# deleted (in the listing then, not now), as /run/state.tar.gz and /run/state.deleted.
# Left out: /vm/state (this test bed's own), the journal (written while it is read), apt's
# caches (apt makes them again) and mount points (not the root file system's).
STATE_SKIP = ("-path ./vm/state -prune -o -path ./var/log/journal -prune "
              "-o -path ./var/cache/apt -prune")
STATE_MARK = f"""
cd / && find . -xdev {STATE_SKIP} -o -print | sort > /run/state.before
touch /run/state.mark
"""
STATE_CAPTURE = f"""
cd / && find . -xdev {STATE_SKIP} -o -print | sort > /run/state.after
comm -23 /run/state.before /run/state.after | sed 's|^[.]||' > /run/state.deleted
awk '{{print "." $2}}' /proc/self/mounts > /run/state.mounts
find . -xdev {STATE_SKIP} -o ! -path . -cnewer /run/state.mark -print \
    | grep -vxF -f /run/state.mounts | sort > /run/state.changed
tar -czpf /run/state.tar.gz --no-recursion -T /run/state.changed
"""


def state_part(tar_gz: bytes, deleted: bytes, index: int, path: str) -> str:
    """An archive part that carries one boot's changes into the next (guest/init applies it)."""
    d = S_IFDIR | 0o755
    cpio.write_entries(path, [
        cpio.Entry("vm", d), cpio.Entry("vm/state", d),
        cpio.Entry(f"vm/state/{index:02d}.tar.gz", S_IFREG | 0o600, tar_gz),
        cpio.Entry(f"vm/state/{index:02d}.deleted", S_IFREG | 0o600, deleted),
    ])
    return path


def with_state(guest: Guest, parts: list[str], path: str) -> Guest:
    """`guest` booting with the state parts (oldest first) after its overlay, as `path`."""
    cpio.concatenate(path, [guest.base.cpio, guest.overlay.cpio, *parts])
    return Guest(base=guest.base, overlay=guest.overlay, initrd=path)


def main(argv: list[str]) -> int:
    t = time.monotonic()
    g = build()
    print(json.dumps({
        "vmlinux": g.base.vmlinux, "initrd": g.initrd, "kver": g.base.kver,
        "base": g.base.key, "overlay": g.overlay.key, "has_kmodd": g.overlay.has_kmodd,
        "has_unit": g.overlay.has_unit, "seconds": round(time.monotonic() - t, 1),
    }, indent=1))
    return 0

