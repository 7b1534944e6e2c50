"""A device's driver binding in sysfs: read it, and ask the kernel to probe the device again.

    /sys/devices/.../DEV/driver            link to the bound driver (absent: unbound)
    /sys/devices/.../DEV/subsystem         link to /sys/bus/BUS (a bus device) or a class
    /sys/devices/.../DEV/driver_override   "(null)" or the one driver that may bind
    /sys/bus/BUS/drivers_autoprobe         "1" or "0"
    /sys/bus/BUS/drivers_probe             write a device name: probe it (synchronously)
    /sys/module/M/drivers/BUS:NAME         the drivers module M registered

Writing a device's name to `drivers_probe` runs the kernel's `device_attach` in the writing
thread: it returns once every matching driver was tried, so the write can take as long as a
probe (a SCSI host scans its bus). Callers run it in a thread of their own.
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Iterable

from kmodd.core.autoload.reprobe import BindingFacts
from kmodd.system.root import Root
from kmodd.system.sysfs import link_name, read_attribute


def _read(path: str) -> str | None:
    try:
        return read_attribute(path).strip()
    except OSError:
        return None


def _link_target(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


class SysfsBinding:
    """Reads and probes through `<root>/sys` (`modules_root`: whose /sys/module is read,
    when the modules are elsewhere than the devices, as in tests)."""

    def __init__(self, root: Root, modules_root: Root | None = None) -> None:
        self.root = root
        self.modules_root = modules_root or root

    def driver(self, devpath: str) -> str | None:
        return link_name(self.root.sys(devpath.lstrip("/"), "driver"))

    def facts(self, devpath: str, modules: Iterable[str]) -> BindingFacts:
        directory = self.root.sys(devpath.lstrip("/"))
        subsystem = _link_target(os.path.join(directory, "subsystem"))
        bus = None
        if subsystem is not None and os.path.basename(os.path.dirname(subsystem)) == "bus":
            bus = os.path.basename(subsystem)
        override = _read(os.path.join(directory, "driver_override")) or ""
        if override == "(null)":
            override = ""
        autoprobe = True
        module_drivers: dict[str, tuple[str, ...]] = {}
        if bus is not None:
            autoprobe = _read(self.root.sys("bus", bus, "drivers_autoprobe")) != "0"
            for module in modules:
                try:
                    names = os.listdir(self.modules_root.sys("module", module, "drivers"))
                except OSError:
                    names = []
                mine = tuple(sorted(n.partition(":")[2] for n in names
                                    if n.partition(":")[0] == bus))
                if mine:
                    module_drivers[module] = mine
        return BindingFacts(bus, self.driver(devpath), override, autoprobe, module_drivers)

    def probe(self, bus: str, devpath: str) -> int:
        """Write the device's name to its bus's drivers_probe; 0 or the errno. The kernel
        answers 0 when the probe ran, bound or not."""
        name = os.path.basename(devpath.rstrip("/")).encode()
        try:
            fd = os.open(self.root.sys("bus", bus, "drivers_probe"),
                         os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            return e.errno or E.EIO
        try:
            os.write(fd, name)
        except OSError as e:
            return e.errno or E.EIO
        finally:
            os.close(fd)
        return 0
