#!/usr/bin/env python3
"""Does the inserting process change the kernel's time in finit_module? One boot, no loader.

    python3 bench/insert_ab.py [-n 5] [--module e1000]

Boots the e2e guest (`usbhost` set, TCG, one vCPU) with no module loader running, plugs an
e1000 NIC through QMP (nothing loads its driver), then inserts the module over and over,
removing it in between, in turn with kmod's `insmod`, with kmodd's insert code
(`system.kernel.LinuxKernel.insert`) in a fresh interpreter's main thread, and the same
from a worker thread of an asyncio loop as the daemon does. The guest kernel's trace times
each finit_module from entry to exit (module load, init and the NIC's probe). The order of
the three turns alternates from round to round.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRACEFS = "/sys/kernel/tracing"
IN_MAIN = """
import sys
from kmodd.system.kernel import LinuxKernel
from kmodd.system.root import Root
sys.exit(LinuxKernel(Root("/")).insert(sys.argv[1]).errno)
"""
IN_WORKER = """
import asyncio, sys
from kmodd.system.kernel import LinuxKernel
from kmodd.system.root import Root
async def main() -> int:
    kernel = LinuxKernel(Root("/"))
    result = await asyncio.get_running_loop().run_in_executor(None, kernel.insert, sys.argv[1])
    return result.errno
sys.exit(asyncio.run(main()))
"""
_ENTRY_EXIT = re.compile(r"(\d+\.\d+): sys_finit_module")


def main(argv: list[str]) -> int:
    from tests.e2e.vm import devices, image
    from tests.e2e.vm.machine import VM

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=5, help="rounds (default 5)")
    args = p.parse_args(argv)
    with VM(devices=devices.usbhost(), cpu="max", guest=image.build(), name="insert-ab") as vm:
        vm.put("/run/in_main.py", IN_MAIN)
        vm.put("/run/in_worker.py", IN_WORKER)
        vm.qmp("device_add", driver="e1000", id="ab-e1000", bus="pci.0", addr="0x10")
        time.sleep(2)
        path = vm.sh("modinfo -n e1000").out.strip()
        vm.sh(f"mountpoint -q {TRACEFS} || mount -t tracefs nodev {TRACEFS}; "
              f"echo 1 > {TRACEFS}/events/syscalls/sys_enter_finit_module/enable; "
              f"echo 1 > {TRACEFS}/events/syscalls/sys_exit_finit_module/enable")
        turns = [("insmod", f"insmod {path}"),
                 ("kmodd, main thread", f"python3 /run/in_main.py {path}"),
                 ("kmodd, worker thread", f"python3 /run/in_worker.py {path}")]
        spent: dict[str, list[float]] = {name: [] for name, _ in turns}
        for n in range(args.n):
            for name, command in (turns if n % 2 == 0 else list(reversed(turns))):
                vm.sh(f"echo > {TRACEFS}/trace")
                vm.sh(command)
                stamps = [float(t) for t in _ENTRY_EXIT.findall(vm.sh(f"cat {TRACEFS}/trace").out)]
                spent[name].append((stamps[1] - stamps[0]) * 1000)
                vm.sh("rmmod e1000")
    print(f"{'inserted by':22} {'median':>8} {'min':>8} {'max':>8}   ms in finit_module, "
          f"{args.n} inserts each")
    for name, values in spent.items():
        print(f"{name:22} {statistics.median(values):8.1f} {min(values):8.1f} "
              f"{max(values):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
