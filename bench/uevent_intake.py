#!/usr/bin/env python3
"""Uevent intake speed: kmodd next to its anchors, on this machine, in one run.

1. parse:    kmodd `parse_uevent` vs pyroute2's uevent marshal, on datagrams built from this
             machine's devices (real uevent variables), events/s.
2. coldplug: kmodd `scan_devices` vs libudev enumeration (pyudev) vs `find -name modalias`
             + `cat`, ms per full scan.
3. netlink:  a burst of real uevents (written to /sys/.../uevent) received by kmodd's socket
             and by libudev's kernel monitor (pyudev) at the same time, events/s each.

Run as root: `python3 bench/uevent_intake.py [--burst N]`. Numbers vary with load; the
ratios are the point.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kmodd.core.autoload.uevent import Uevent, format_uevent, parse_uevent
from kmodd.system.netlink import open_uevent_socket
from kmodd.system.root import Root
from kmodd.system.sysfs import scan_devices


def best_rate(fn: Callable[[], object], items: int, repeat: int = 5) -> float:
    """Items per second of the fastest of `repeat` runs (the least disturbed by other load)."""
    best = min(timeit.repeat(fn, number=1, repeat=repeat))
    return items / best


def datagrams() -> list[bytes]:
    out = []
    for n, device in enumerate(scan_devices(Root()).devices, 1):
        event = device.as_uevent()
        env = dict(event.env)
        env["SEQNUM"] = str(1000 + n)
        out.append(format_uevent(Uevent(event.action, event.devpath, event.subsystem,
                                        1000 + n, env)))
    return out


def bench_parse() -> None:
    from pyroute2.netlink.uevent import MarshalUevent

    base = datagrams()
    data = base * (20_000 // len(base) + 1)
    marshal = MarshalUevent()

    def kmodd() -> None:
        for d in data:
            parse_uevent(d)

    def pyroute2() -> None:
        for d in data:
            list(marshal.parse(d))

    ours = best_rate(kmodd, len(data))
    theirs = best_rate(pyroute2, len(data))
    size = sum(map(len, base)) // len(base)
    print(f"parse     kmodd {ours:10,.0f} events/s   pyroute2 {theirs:10,.0f} events/s   "
          f"ratio {ours / theirs:.2f}x  ({len(base)} real devices, mean {size} bytes)")


def bench_coldplug() -> None:
    import pyudev

    def kmodd() -> None:
        scan_devices(Root())

    def libudev() -> None:
        context = pyudev.Context()
        for device in context.list_devices():
            device.properties.get("MODALIAS")

    def find() -> None:
        subprocess.run("find /sys/devices -name modalias -exec cat {} + >/dev/null",
                       shell=True, check=True)

    times = {name: min(timeit.repeat(fn, number=1, repeat=7)) * 1000
             for name, fn in (("kmodd", kmodd), ("libudev", libudev), ("find+cat", find))}
    scan = scan_devices(Root())
    print(f"coldplug  kmodd {times['kmodd']:7.1f} ms   libudev enumerate {times['libudev']:7.1f} ms"
          f"   find+cat {times['find+cat']:7.1f} ms   ratio vs libudev "
          f"{times['libudev'] / times['kmodd']:.2f}x  ({len(scan.devices)} devices with a "
          f"modalias, {scan.directories} directories)")


def bench_netlink(burst: int) -> None:
    import pyudev

    paths = [f"/sys{d.devpath}/uevent" for d in scan_devices(Root()).devices if d.subsystem]
    fds = [os.open(p, os.O_WRONLY) for p in paths]
    sock = open_uevent_socket()
    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.set_receive_buffer_size(128 * 1024 * 1024)
    monitor.start()
    try:
        for i in range(burst):
            os.write(fds[i % len(fds)], b"add")
        t0 = time.perf_counter()
        ours = 0
        while True:
            batch = sock.receive_nowait(100_000)
            if not batch:
                break
            ours += len(batch)
        t1 = time.perf_counter()
        theirs = 0
        while monitor.poll(timeout=0) is not None:
            theirs += 1
        t2 = time.perf_counter()
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()
    r_ours, r_theirs = ours / (t1 - t0), theirs / (t2 - t1)
    print(f"netlink   kmodd {r_ours:10,.0f} events/s   libudev monitor {r_theirs:10,.0f} "
          f"events/s   ratio {r_ours / r_theirs:.2f}x  (burst {burst}: kmodd got {ours}, "
          f"libudev got {theirs}; both sockets 128 MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=5000)
    args = parser.parse_args()
    bench_parse()
    bench_coldplug()
    if os.geteuid() == 0:
        bench_netlink(args.burst)
    else:
        print("netlink   skipped (needs root to write uevent files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
