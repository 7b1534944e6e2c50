"""A test root for the daemon: real fixture modules indexed by the real depmod, and the pieces
that run a whole daemon in-process on it (the simulated kernel, a uevent source, a log).

The fixture modules' aliases match devices this machine really has (virtio PCI functions,
the platform serial port and speaker, the i440fx-style host bridge...), so that writing
`add` to their uevent files gives real uevents whose MODALIAS resolves to fixture modules.
`kmod_plan` asks the real modprobe (`--show-depends -b`, udev's semantics) what it would
insert for a modalias: the oracle the daemon's inserts are compared with.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmodd.core.settings import Settings, defaults
from kmodd.daemon.service import Daemon, DaemonSetup
from kmodd.system.journal import LogSink, Priority
from kmodd.system.notify import Notifier
from kmodd.system.root import Root
from tests.fakes import FakeKernel, GatedSyscalls
from tests.kofixtures import standard_modinfo, write_module

#: The kernel release the in-process tests give their daemon.
KVER = "6.1.0-kmodd-test"
#: CRC of module_layout the fixture modules and the simulated kernel agree on.
LAYOUT_CRC = 0x5EED


@dataclass(frozen=True)
class FixtureModule:
    name: str
    aliases: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    modinfo: tuple[str, ...] = ()
    subdir: str = "kernel/drivers/kmodd"


#: Modules for devices this machine has (see the module docstring).
MACHINE_MODULES = (
    FixtureModule("kmodd_core", exports=("kmodd_core_register",)),
    FixtureModule("kmodd_virtio_pci", aliases=("pci:v00001AF4d*sv*sd*bc*sc*i*",),
                  exports=("kmodd_virtio_register",), needs=("kmodd_core_register",)),
    FixtureModule("kmodd_virtio_net", aliases=("virtio:d00000001v*",),
                  needs=("kmodd_virtio_register", "kmodd_failover")),
    FixtureModule("kmodd_net_failover", exports=("kmodd_failover",)),
    FixtureModule("kmodd_virtio_blk", aliases=("virtio:d00000002v*",),
                  needs=("kmodd_virtio_register",)),
    FixtureModule("kmodd_serial", aliases=("platform:serial8250", "acpi:PNP0501:*")),
    FixtureModule("kmodd_pcspkr", aliases=("platform:pcspkr",)),
    FixtureModule("kmodd_host_bridge", aliases=("pci:v00008086d00000D57sv*sd*bc*sc*i*",),
                  needs=("kmodd_core_register",)),
)
#: modprobe.d of the machine tree: the speaker is blacklisted.
MACHINE_CONFIG = {"etc/modprobe.d/kmodd-test.conf": "blacklist kmodd_pcspkr\n"}
#: A built-in with an alias (modules.builtin.modinfo): the RTC's driver is built in.
MACHINE_BUILTINS = {"kmodd_rtc": ("platform:rtc_cmos",)}


def write_tree(base: Path, modules: Iterable[FixtureModule], *, kver: str = KVER,
               config: Mapping[str, str] = MACHINE_CONFIG,
               builtins: Mapping[str, tuple[str, ...]] = MACHINE_BUILTINS,
               cmdline: str = "") -> Root:
    """Write the modules, run the real depmod on them, add the configuration; the Root."""
    moddir = base / "lib/modules" / kver
    order = []
    for m in modules:
        extra = (*(f"alias={a}" for a in m.aliases), *m.modinfo)
        path = write_module(str(moddir / m.subdir), m.name, exports=m.exports, needs=m.needs,
                            modinfo=standard_modinfo(m.name, *extra), layout_crc=LAYOUT_CRC)
        order.append(os.path.relpath(path, moddir))
    (moddir / "modules.order").write_text("".join(f"{p}\n" for p in order))
    (moddir / "modules.builtin").write_text(
        "".join(f"kernel/drivers/kmodd/{name}.ko\n" for name in builtins))
    (moddir / "modules.builtin.modinfo").write_bytes(b"".join(
        f"{name}.alias={alias}\0".encode() for name, aliases in builtins.items()
        for alias in aliases))
    empty = base / ".depmod.d"
    empty.mkdir(exist_ok=True)
    subprocess.run(["depmod", "-b", str(base), "-C", str(empty), kver], check=True,
                   capture_output=True)
    for rel, text in config.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    (base / "proc").mkdir(exist_ok=True)
    (base / "proc/cmdline").write_text(cmdline + "\n")
    (base / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
    return Root(str(base))


#: Devices of a fake sysfs (devpath -> subsystem, MODALIAS) for coldplug under a test root.
FAKE_DEVICES = {
    "/devices/pci0000:00/0000:00:03.0":
        ("pci", "pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00"),
    "/devices/pci0000:00/0000:00:03.0/virtio2": ("virtio", "virtio:d00000001v00001AF4"),
    "/devices/platform/pcspkr": ("platform", "platform:pcspkr"),
    "/devices/platform/serial8250": ("platform", "platform:serial8250"),
    "/devices/platform/kmodd-nodriver": ("platform", "platform:kmodd-nodriver"),
}


def write_sysfs(base: Path, devices: Mapping[str, tuple[str, str]] = FAKE_DEVICES) -> None:
    """Device directories with `uevent` files and `subsystem` links, as sysfs has them."""
    for devpath, (subsystem, modalias) in devices.items():
        directory = base / "sys" / devpath.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "uevent").write_text(f"MODALIAS={modalias}\n")
        (directory / "modalias").write_text(f"{modalias}\n")
        bus = base / "sys/bus" / subsystem
        bus.mkdir(parents=True, exist_ok=True)
        (directory / "subsystem").symlink_to(bus)


def kmod_plan(root: Root, key: str, kver: str = KVER) -> list[str]:
    """What the real modprobe would insert for `key` with udev's flags (-b), in order."""
    result = subprocess.run(
        ["modprobe", "-d", root.prefix, "-S", kver, "-C", root.path("/etc/modprobe.d"),
         "--show-depends", "-b", key], capture_output=True, text=True, check=False)
    names = []
    for line in result.stdout.splitlines():
        if line.startswith("insmod "):
            names.append(os.path.basename(line.split()[1]).removesuffix(".ko").replace("-", "_"))
    return names


def kmodctl(path: str, *args: str) -> tuple[int, str, str]:
    """`kmodctl --socket PATH ARGS...` in-process: (exit code, stdout, stderr)."""
    import io

    from kmodd.cli.kmodctl import dispatch

    out, err = io.BytesIO(), io.BytesIO()
    code = dispatch(["kmodctl", "--socket", path, *args], root=Root(), stdout=out,
                    stderr=err, environ={})
    return code, out.getvalue().decode(), err.getvalue().decode()


def fake_kernel(root: Root, **kwargs: Any) -> FakeKernel:
    return FakeKernel(root, module_layout_crc=LAYOUT_CRC, module_sig=False, **kwargs)


class ListSink:
    """A LogSink that keeps every record (and message) for assertions."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.messages: list[tuple[Priority, str]] = []
        self.fields: list[dict[str, str]] = []  # each message's fields, in step with messages

    def outcome(self, record: Any) -> None:
        self.records.append(record)

    def log(self, priority: Priority, message: str, **fields: str) -> None:
        self.messages.append((priority, message))
        self.fields.append(fields)

    def of_kind(self, kind: Any) -> list[tuple[Priority, str]]:
        """The messages of one kind (a `core.autoload.messages.Message`), by their MESSAGE_ID."""
        from kmodd.core.autoload.messages import MESSAGE_IDS

        wanted = MESSAGE_IDS[kind]
        return [m for m, f in zip(self.messages, self.fields, strict=True)
                if f.get("MESSAGE_ID") == wanted]

    def texts(self) -> list[str]:
        return [m for _, m in self.messages]


def settings(**overrides: Any) -> Settings:
    """Defaults with `overrides`, and no inotify or coldplug unless asked."""
    values = {"watch_config": False, "coldplug": False, "log_level": "debug", **overrides}
    return _replace(defaults(), values)


def _replace(s: Settings, values: Mapping[str, Any]) -> Settings:
    import dataclasses

    return dataclasses.replace(s, **values)


class RunningDaemon:
    """A Daemon running in the current event loop (`async with RunningDaemon(...) as d`)."""

    def __init__(self, root: Root, *, kernel: FakeKernel | GatedSyscalls | None = None,
                 source: Any = None, devices_root: Root | None = None,
                 sink: LogSink | None = None, notifier: Notifier | None = None,
                 kver: str = KVER, binding: Any = None, **overrides: Any) -> None:
        """`kernel`: the simulated kernel (serialised by GatedSyscalls, as the daemon's threads
        need: the simulation itself is not thread-safe)."""
        self.root = root
        fake = kernel if kernel is not None else fake_kernel(root)
        self.syscalls = fake if isinstance(fake, GatedSyscalls) else GatedSyscalls(fake)
        self.fake = self.syscalls.kernel
        self.sink = sink if sink is not None else ListSink()
        overrides.setdefault("control_socket", "/run/kmodd/io.kmodd")
        setup = DaemonSetup(settings=settings(**overrides), root=root,
                            devices_root=devices_root, kernel_release=kver,
                            environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.daemon = Daemon(setup, self.sink, kernel=self.syscalls.port(), source=source,
                             notifier=notifier or Notifier({}), install_signals=False,
                             binding=binding)
        self._task: asyncio.Task[None] | None = None

    @property
    def socket_path(self) -> str:
        return self.root.path("/run/kmodd/io.kmodd")

    @property
    def logged(self) -> ListSink:
        """The default sink, which keeps what the daemon logged (not a sink the test gave)."""
        assert isinstance(self.sink, ListSink), f"the daemon logs to {self.sink!r}"
        return self.sink

    async def __aenter__(self) -> Daemon:
        self._task = asyncio.get_running_loop().create_task(self.daemon.run())
        ready = asyncio.ensure_future(self.daemon.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()  # raises what stopped it
        assert ready in done, "the daemon did not get ready"
        return self.daemon

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self.daemon.request_stop()
        await asyncio.wait_for(self._task, 30)


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0,
                     what: str = "the condition") -> None:
    """Poll `predicate` on the event loop until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


