"""`make demo`: boot the guest, let kmodd coldplug, hotplug a NIC and a USB keyboard, report.

Builds or reuses the image, boots it (usbhost set by default, `--set rich` for the full one),
starts journald and kmodd from its unit file, hotplugs e1000 and usb-kbd through QMP (then
removes them), and prints `kmodctl status`, `kmodctl blame`, `kmodctl explain` for a module
whose load failed, `kmodctl critical-chain` and kmodd's journal lines; `kmodctl plot`'s SVG
timeline of the coldplug (one row per module) is written on the host (`--plot FILE`, default
kmodd-coldplug.svg). While
the checkout has no kmodd unit (or kmodd does not import in the guest), it says so and shows
the same steps with the anchor, systemd-udevd + kmod.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.e2e.vm import anchor, devices, image
from tests.e2e.vm.loaders import LOADERS
from tests.e2e.vm.machine import VM

DEMO_DEVICES = ("e1000", "usb-kbd")


def _section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _show(vm: VM, cmd: str) -> None:
    print(f"$ {cmd}")
    r = vm.sh(cmd, check=False, timeout=120)
    sys.stdout.write(r.out + r.err)
    if r.rc:
        print(f"(exit {r.rc})")


def _explain_a_failure(vm: VM) -> None:
    """`kmodctl explain` for the first module kmodd failed to load, if any did."""
    r = vm.sh("kmodctl --json modules", check=True, timeout=120)
    failed = [m["name"] for m in json.loads(r.out)["modules"] if m.get("outcome") == "failed"]
    _section("kmodctl explain (a module whose load failed)")
    if not failed:
        print("no module failed to load")
        return
    print(f"failed: {', '.join(failed)}")
    _show(vm, f"kmodctl explain {failed[0]}")


def _save_plot(vm: VM, path: Path) -> None:
    r = vm.sh("kmodctl plot", check=True, timeout=120)
    path.write_text(r.out)
    svg = ET.fromstring(r.out.encode())
    ns = {"s": "http://www.w3.org/2000/svg"}
    title = svg.find("s:text", ns)
    rows = [g for g in svg.findall("s:g", ns) if (g.get("class") or "").startswith("row")]
    timed = json.loads(vm.sh("kmodctl --json plot", check=True, timeout=120).out)
    critical = [g.get("data-label") for g in rows if "critical" in (g.get("class") or "")]
    print(f"$ kmodctl plot > {path.resolve()}\n"
          f"{title.text if title is not None else '?'}: {len(rows)} rows for "
          f"{len(timed)} timed modules (waiting, then inside finit_module), "
          f"{len(critical)} on the critical chain; {len(r.out)} bytes")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="make demo")
    p.add_argument("--set", default="usbhost", choices=["usbhost", "rich"])
    p.add_argument("--loader", default="kmodd", choices=sorted(LOADERS))
    p.add_argument("--plot", default="kmodd-coldplug.svg",
                   help="where to write kmodctl plot's SVG on the host")
    args = p.parse_args(argv)

    _section("guest image")
    guest = image.build()
    print(f"kernel {guest.base.kver}, initrd {guest.initrd}, "
          f"kmodd from the checkout: {guest.overlay.has_kmodd}, unit: {guest.overlay.has_unit}")
    _section(f"boot ({args.set} device set, QEMU TCG)")
    with VM(devices=devices.SETS[args.set](), guest=guest, name="demo") as vm:
        info = vm.boot_info
        print(f"booted in {info['host_seconds']} s, modules loaded at init: "
              f"{len(info['modules_at_init'])}")
        vm.start_journald()
        name = args.loader
        why = LOADERS[name].unavailable(vm)
        if why and name == "kmodd":
            print(f"kmodd is not available yet: {why}\n-> showing the anchor instead: "
                  "systemd-udevd + kmod")
            name = "udev"
        elif why:
            print(f"{name} unavailable: {why}")
            return 1
        loader = LOADERS[name]
        _section(f"coldplug with {name}")
        started = loader.start(vm)
        print(f"coldplug done in {started['coldplug_seconds']:.1f} s; "
              f"{len(vm.loaded_modules())} modules loaded")
        _section("hotplug through QMP")
        vm.uevents_start(stream=True)
        for dev in anchor.HOTPLUG_DEVICES:
            if dev.label not in DEMO_DEVICES:
                continue
            r = anchor.hotplug(vm, dev)
            print(f"device_add {dev.label}: modules live {r['modules_live']}, "
                  f"drivers bound {r['bound']}; device_del: gone after "
                  f"{r['unplug']['gone_seconds']} s, "
                  f"{len(r['unplug']['uevents_remove'])} remove/unbind uevents")
        if name == "kmodd":
            _section("kmodctl status")
            _show(vm, "kmodctl status")
            _section("kmodctl blame")
            _show(vm, "kmodctl blame")
            _explain_a_failure(vm)
            _section("kmodctl critical-chain")
            _show(vm, "kmodctl critical-chain")
            _section("kmodctl plot")
            _save_plot(vm, Path(args.plot))
            _section("journal (kmodd)")
            _show(vm, "journalctl --no-pager -o short-monotonic _COMM=kmodd | tail -n 40")
        else:
            _section("lsmod (first lines)")
            _show(vm, "lsmod | head -n 15")
            _section("journal (kernel and systemd-udevd, last lines)")
            _show(vm, "journalctl --no-pager -o short-monotonic | tail -n 20")
    return 0
