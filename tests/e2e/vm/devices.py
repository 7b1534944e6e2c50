"""Device sets a guest boots with: `none`, `usbhost` (for hotplug) and `rich` (coldplug).

`rich` is the reference set of the test bed the anchor figures come from (pc/i440fx, 48 PCI
functions with the board's and a pci-bridge): NICs, storage HBAs with disks, sound, four USB
host controllers with devices, the virtio family, watchdogs, CAN, IPMI, parallel, and
devices Debian's kernel has no driver for. Block devices use QEMU's `null-co` driver (no
image files; reads return zeroes, so no partition table is found).

QEMU quirks honoured here: CAN cards need an `-object can-bus`; `usb-serial` on a null chardev
never attaches unless always-plugged=on; EHCI without companions takes only high-speed
devices, so keyboards and tablets go on xHCI/UHCI; xHCI has 4 USB-2 ports (QEMU silently adds
a hub past that, so the set uses an explicit usb-hub); the pc machine already has its isa-fdc;
bus 0 has 32 slots, so part of the set sits behind the pci-bridge. The NICs have no option
ROM (`romfile=`): SeaBIOS would spend ~5 s initialising iPXE on each boot, and the guest's
drivers never look at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# PCI slots on bus 0 that hotplug tests use (fixed addr= so the sysfs path is known).
HOTPLUG_SLOTS = tuple(range(0x10, 0x18))


@dataclass(frozen=True)
class DeviceSet:
    name: str
    args: tuple[str, ...] = ()
    # bus names a hotplug test may use, e.g. {"pci": "pci.0", "xhci": "xhci.0"}
    buses: dict[str, str] = field(default_factory=dict)

    def argv(self, rundir: str) -> list[str]:
        """QEMU arguments; `{run}` in an argument is the VM's run directory."""
        return [a.replace("{run}", rundir) for a in self.args]


def _null_disk(node: str, size: int = 64 << 20) -> list[str]:
    return ["-blockdev", f"driver=null-co,node-name={node},size={size},read-zeroes=on"]


def none() -> DeviceSet:
    """Only the board (i440fx, PIIX3, PIIX4 ACPI, std VGA, the two UARTs)."""
    return DeviceSet("none")


def usbhost() -> DeviceSet:
    """USB host controllers and two spare block nodes: the base for hotplug tests.

    PCI devices are hotplugged on pci.0 at HOTPLUG_SLOTS; USB devices on xhci.0 (full/low
    speed, e.g. usb-kbd) or ehci.0 (high speed, e.g. usb-storage with drive=hotdisk0);
    virtio-blk/ahci disks can use hotdisk1.
    """
    args = [
        "-device", "qemu-xhci,id=xhci",
        "-device", "usb-ehci,id=ehci",
        *_null_disk("hotdisk0"), *_null_disk("hotdisk1"),
    ]
    return DeviceSet("usbhost", tuple(args),
                     {"pci": "pci.0", "xhci": "xhci.0", "ehci": "ehci.0"})


def rich() -> DeviceSet:
    """The reference coldplug set (see the module docstring)."""
    return DeviceSet("rich", tuple(_rich_args(usb_disk=True)), {"pci": "pci.0"})


def rich_hotplug() -> DeviceSet:
    """`rich` without its USB disk at boot, and a spare disk node to hotplug one.

    `usb-storage` goes on ehci.0 with drive=hotdisk0: usb_storage and uas are then not
    live after coldplug (sd_mod is: the set's other disks need it), so the hotplug loads them.
    """
    args = [*_rich_args(usb_disk=False), *_null_disk("hotdisk0")]
    return DeviceSet("rich-hotplug", tuple(args), {"pci": "pci.0", "ehci": "ehci.0"})


def _rich_args(usb_disk: bool) -> list[str]:
    a: list[str] = []

    def dev(spec: str) -> None:
        a.extend(["-device", spec])

    a += ["-audiodev", "none,id=snd0", "-object", "can-bus,id=cbus0", "-object", "can-bus,id=cbus1",
          "-chardev", "null,id=nullpar", "-chardev", "null,id=nullser",
          "-chardev", "null,id=nullvc", "-chardev", "null,id=nullusbser",
          "-object", "cryptodev-backend-builtin,id=crypto0",
          "-object", "rng-random,id=rng0,filename=/dev/urandom",
          "-fsdev", "local,id=fs0,path={run},security_model=none,readonly=on"]
    for n in ("ahcidisk", "vblk", "vscsidisk", "lsidisk", "nvmedisk", "sddisk",
              *(("usbdisk",) if usb_disk else ())):
        a += _null_disk(n)

    # Bus 0 (slots 0-1 are the host bridge and PIIX3/IDE/PIIX4; VGA takes the next).
    dev("pci-bridge,id=br0,chassis_nr=1")
    for nic in ("e1000", "e1000e", "virtio-net-pci", "rtl8139", "ne2k_pci", "pcnet",
                "i82559er", "vmxnet3", "tulip"):
        dev(f"{nic},romfile=")
    dev("ich9-ahci,id=ahci0")
    dev("ide-hd,drive=ahcidisk,bus=ahci0.0")
    dev("ide-cd,bus=ahci0.1")
    dev("ide-cd,bus=ide.1,unit=0")  # on the board's PIIX3 IDE
    dev("virtio-blk-pci,drive=vblk")
    dev("virtio-scsi-pci,id=vscsi0")
    dev("scsi-hd,drive=vscsidisk,bus=vscsi0.0")
    dev("scsi-cd,bus=vscsi0.0")
    dev("lsi53c895a,id=lsi0")
    dev("scsi-hd,drive=lsidisk,bus=lsi0.0")
    dev("megasas")
    dev("mptsas1068")
    dev("pvscsi")
    dev("am53c974")
    dev("nvme,serial=kmodde2e,drive=nvmedisk")
    dev("sdhci-pci,id=sdhci0")
    dev("sd-card,drive=sddisk")
    dev("intel-hda,id=hda0")
    dev("hda-duplex,bus=hda0.0,audiodev=snd0")
    dev("AC97,audiodev=snd0")
    dev("ES1370,audiodev=snd0")
    dev("piix3-usb-uhci,id=uhci")
    dev("pci-ohci,id=ohci")
    dev("usb-ehci,id=ehci")
    dev("qemu-xhci,id=xhci")
    dev("virtio-serial-pci,id=vser0")
    dev("virtconsole,chardev=nullvc,bus=vser0.0")
    dev("virtio-gpu-pci")

    # Behind the bridge.
    for spec in ("virtio-rng-pci,rng=rng0", "virtio-balloon-pci", "virtio-keyboard-pci",
                 "virtio-tablet-pci", "virtio-crypto-pci,cryptodev=crypto0",
                 "virtio-9p-pci,fsdev=fs0,mount_tag=kmodde2e", "i6300esb", "pvpanic-pci",
                 "pci-serial,chardev=nullser", "kvaser_pci,canbus=cbus0",
                 "pcm3680_pci,canbus0=cbus0,canbus1=cbus1", "tpci200,id=tpci0",
                 "qxl", "edu"):
        dev(f"{spec},bus=br0")
    dev("ipoctal232,bus=tpci0.0")

    # USB devices.
    dev("usb-kbd,bus=xhci.0,port=1")
    dev("usb-tablet,bus=xhci.0,port=2")
    dev("usb-hub,bus=xhci.0,port=3")
    dev("usb-net,bus=xhci.0,port=3.1")
    dev("usb-serial,bus=xhci.0,port=3.2,chardev=nullusbser,always-plugged=on")
    if usb_disk:
        dev("usb-storage,bus=ehci.0,drive=usbdisk")
    dev("usb-mouse,bus=uhci.0")
    dev("usb-audio,bus=uhci.0,audiodev=snd0")
    dev("usb-wacom-tablet,bus=ohci.0")

    # ISA.
    dev("ib700")
    dev("pvpanic")
    dev("isa-parallel,chardev=nullpar")
    dev("ipmi-bmc-sim,id=bmc0")
    dev("isa-ipmi-kcs,bmc=bmc0")
    return a


SETS = {"none": none, "usbhost": usbhost, "rich": rich, "rich-hotplug": rich_hotplug}
