"""kmodd's end-to-end test bed: a real Debian kernel under QEMU/TCG with emulated devices.

Modules: `image` (guest build and cache), `cpio` (initramfs writer), `machine` (the VM:
QEMU argv, agent and QMP clients), `devices` (device sets), `loaders` (how a module loader is
started in the guest: udev, or kmodd from its unit file), `anchor` (coldplug/hotplug
measurement drivers), `demo` (`make demo`). Run `python3 tests/e2e/vm --help`.
"""
