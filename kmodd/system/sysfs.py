"""Devices as sysfs shows them: the coldplug walk, the resync scan and device details.

Coldplug does not write `add` to every `uevent` file the way `udevadm trigger` does: it walks
`/sys/devices` once and reads, for each device directory, what the kernel would have put into
the uevent (the `uevent` file holds exactly those variables). A device counts when its
`uevent` has `MODALIAS=` or, failing that, the directory has a non-empty `modalias` file
(`/sys/devices/system/cpu` has a `modalias` file but an empty `uevent`; `cpu0` has
`MODALIAS=` in `uevent` but no `modalias` file). The same scan serves resynchronisation after
the kernel dropped uevents. Symbolic links are not followed, so every device is seen once.

Device details for `kmodctl` (vendor, model, driver) come from the device's sysfs attributes
and, where udevd runs, its database (`/run/udev/data/`, read as libudev reads it: the hwdb's
vendor and model names are there), under any `Root`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kmodd.core.autoload.uevent import (
    Action,
    Uevent,
    udev_database_id,
    udev_database_properties,
)
from kmodd.system.root import Root

#: What the kernel's uevent files and broadcasts always hold besides the device's own variables.
_HEADER_KEYS = ("ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM")
#: Coldplug events carry this sequence number; the kernel's start at 1.
COLDPLUG_SEQNUM = 0

#: Where a device's vendor comes from, first hit wins: udev database property, then attribute.
VENDOR_SOURCES = (
    ("property", "ID_VENDOR_FROM_DATABASE"),
    ("attribute", "manufacturer"),
    ("attribute", "vendor"),
    ("attribute", "idVendor"),
)
#: Where a device's model comes from, first hit wins.
MODEL_SOURCES = (
    ("property", "ID_MODEL_FROM_DATABASE"),
    ("attribute", "product"),
    ("attribute", "model"),
    ("attribute", "device"),
    ("attribute", "idProduct"),
)


@dataclass(frozen=True, slots=True)
class SysfsDevice:
    """A device directory that has a modalias: its devpath, subsystem and uevent variables."""

    devpath: str
    subsystem: str
    env: Mapping[str, str] = field(hash=False)

    @property
    def modalias(self) -> str:
        return self.env["MODALIAS"]

    def as_uevent(self) -> Uevent:
        """The `add` uevent the kernel would send for this device, with seqnum 0."""
        env = {
            "ACTION": Action.ADD.value,
            "DEVPATH": self.devpath,
            "SUBSYSTEM": self.subsystem,
            **self.env,
            "SEQNUM": str(COLDPLUG_SEQNUM),
        }
        return Uevent(Action.ADD, self.devpath, self.subsystem, COLDPLUG_SEQNUM, env)


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """A path the scan could not read (a device that vanished, a permission error)."""

    path: str
    error: str


@dataclass(frozen=True, slots=True)
class Scan:
    devices: tuple[SysfsDevice, ...]
    problems: tuple[ScanProblem, ...]
    directories: int


#: sysfs attributes are at most one page; read a little more to see the end in one call.
_ATTRIBUTE_BYTES = 8192


def read_attribute(path: str) -> str:
    # os.open/os.read: half the cost of open() per file, and a scan reads hundreds of them.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, _ATTRIBUTE_BYTES).decode(errors="backslashreplace")
    finally:
        os.close(fd)


def _parse_uevent_file(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key not in _HEADER_KEYS:
            env[key] = value
    return env


def link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def scan_devices(root: Root) -> Scan:
    """Walk `<root>/sys/devices` and return every device with a modalias, parents first."""
    problems: list[ScanProblem] = []
    walk = DeviceWalk(root, problems)
    devices = tuple(walk)
    return Scan(devices, tuple(problems), walk.directories)


class DeviceWalk:
    """`scan_devices` one device at a time, for a caller that acts on each as it is found.

    Directories that cannot be read are appended to `problems`; `directories` counts those
    visited so far.
    """

    def __init__(self, root: Root, problems: list[ScanProblem]) -> None:
        self.root = root
        self.problems = problems
        self.directories = 0

    def __iter__(self) -> Iterator[SysfsDevice]:
        sys_prefix = self.root.sys()
        problems = self.problems
        stack = [self.root.sys("devices")]
        while stack:
            path = stack.pop()
            self.directories += 1
            names: set[str] = set()
            subdirs: list[str] = []
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.path)
                        else:
                            names.add(entry.name)
            except OSError as e:
                problems.append(ScanProblem(path, os.strerror(e.errno or 0)))
                continue
            # Reversed so that popping visits children in directory order, parents first.
            stack.extend(reversed(subdirs))
            if "uevent" not in names:
                continue
            device = _device_at(path, sys_prefix, names, problems)
            if device is not None:
                yield device


def _device_at(
    path: str, sys_prefix: str, names: set[str], problems: list[ScanProblem]
) -> SysfsDevice | None:
    try:
        env = _parse_uevent_file(read_attribute(os.path.join(path, "uevent")))
        if not env.get("MODALIAS") and "modalias" in names:
            modalias = read_attribute(os.path.join(path, "modalias")).rstrip("\n")
            if modalias:
                env["MODALIAS"] = modalias
    except OSError as e:
        # Devices come and go during a scan; ENODEV/ENOENT are a device that just left.
        problems.append(ScanProblem(path, os.strerror(e.errno or 0)))
        return None
    if not env.get("MODALIAS"):
        return None
    subsystem = link_name(os.path.join(path, "subsystem")) or ""
    devpath = path[len(sys_prefix.rstrip("/")) :]
    return SysfsDevice(devpath, subsystem, MappingProxyType(env))


def loaded_modules(root: Root) -> tuple[str, ...]:
    """Names under `/sys/module` (loaded modules and built-ins with parameters), sorted."""
    try:
        return tuple(sorted(os.listdir(root.sys("module"))))
    except OSError:
        return ()


def module_is_present(root: Root, name: str) -> bool:
    """udev's `TEST=="[module/NAME]"`: does `/sys/module/NAME` exist?"""
    return os.path.exists(root.sys("module", name))


@dataclass(frozen=True, slots=True)
class DeviceDetails:
    """What `kmodctl devices` shows about a device besides kmodd's own state."""

    devpath: str
    subsystem: str | None
    devtype: str | None
    driver: str | None
    modalias: str | None
    vendor: str | None
    model: str | None


def device_details(root: Root, devpath: str) -> DeviceDetails | None:
    """Details of the device at `devpath` (e.g. `/devices/pci0000:00/...`), None if gone."""
    return _details_from_sysfs(root, devpath)


def _first(sources: tuple[tuple[str, str], ...], props: Mapping[str, str],
           attrs: Mapping[str, str | None]) -> str | None:
    for kind, name in sources:
        value = props.get(name) if kind == "property" else attrs.get(name)
        if value:
            return value
    return None


#: Bytes read of a udev database file (a device's has a few dozen lines).
_UDEV_DATABASE_BYTES = 65536


def _udev_properties(root: Root, subsystem: str | None, devpath: str,
                     env: Mapping[str, str]) -> dict[str, str]:
    """What udevd recorded about the device (hwdb names among them), {} without udevd."""
    name = udev_database_id(subsystem or "", os.path.basename(devpath), env)
    try:
        fd = os.open(root.run("udev", "data", name), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        data = os.read(fd, _UDEV_DATABASE_BYTES)
    except OSError:
        return {}
    finally:
        os.close(fd)
    return udev_database_properties(data.decode(errors="backslashreplace"))


def _details_from_sysfs(root: Root, devpath: str) -> DeviceDetails | None:
    path = root.sys(devpath.lstrip("/"))
    try:
        env = _parse_uevent_file(read_attribute(os.path.join(path, "uevent")))
    except OSError:
        return None
    attrs: dict[str, str | None] = {}
    for _, name in (*VENDOR_SOURCES, *MODEL_SOURCES, ("attribute", "modalias")):
        try:
            attrs[name] = read_attribute(os.path.join(path, name)).strip()
        except OSError:
            attrs[name] = None
    subsystem = link_name(os.path.join(path, "subsystem"))
    props = {**env, **_udev_properties(root, subsystem, devpath, env)}
    return DeviceDetails(
        devpath=devpath,
        subsystem=subsystem,
        devtype=env.get("DEVTYPE"),
        driver=link_name(os.path.join(path, "driver")),
        modalias=env.get("MODALIAS") or attrs["modalias"] or None,
        vendor=_first(VENDOR_SOURCES, props, attrs),
        model=_first(MODEL_SOURCES, props, attrs),
    )
