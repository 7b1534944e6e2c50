#!/usr/bin/env python3
"""The cost of a load chain's steps: kmodd's loader next to libkmod's insertion loop, in one run.

    python3 bench/bench_chain.py [--rounds N] [--modules sd_mod,snd_hda_intel,...]

A hotplugged USB disk waits for sd_mod's chain of seven inserts, a sound card for eleven; what
a loader spends between two finit_module calls is added to the device's latency once per
step. This measures that part alone. Both loaders probe the same modules of the Debian 6.1
tree (tests/kerneltree.py), with udev's flags (`APPLY_BLACKLIST`), in child processes started
with `LD_PRELOAD` of a small shim (compiled here with cc) whose `syscall()` answers 0 to
finit_module and passes every other call on: both do all their own work (lookups, the probe
list, /sys/module/<name>/initstate for every step, opening the file, the syscall through libc)
and the kernel does nothing. This machine loads no modules, so every step inserts.

* kmodd: `core.kmod.plan.plan_probe` and `daemon.loader.Loader.run_chain`, as the daemon runs a
  device's chain (a worker thread, the in-flight map, /dev/kmsg watched, each step timed and
  recorded); and the same plan run in the calling thread (`Loader._run_blocking`).
* anchor: libkmod.so.2 through ctypes, `kmod_module_new_from_name` and
  `kmod_module_probe_insert_module` on one long-lived context, as udev's `kmod load` does.

Each side repeats the probes `--rounds` times on warm caches; microseconds per step, ratio.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODULES = "sd_mod,snd_hda_intel,virtio_net,usb_storage,usbhid"
KMOD_PROBE_APPLY_BLACKLIST = 0x20000

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>

/* finit_module succeeds at once; every other syscall() goes to libc. */
long syscall(long number, ...)
{
    static long (*next)(long, ...);
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_finit_module)
        return 0;
    if (!next)
        next = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return next(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"""


def build_shim(directory: str) -> str | None:
    """Compile the shim; None (and why, printed) when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler (cc): the shim cannot be built; apt-get install gcc")
        return None
    source = os.path.join(directory, "finit_noop.c")
    shim = os.path.join(directory, "finit_noop.so")
    with open(source, "w") as f:
        f.write(SHIM)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", shim, source, "-ldl"], check=True)
    return shim


def child_kmodd(moddir: str, names: list[str], rounds: int) -> dict[str, float]:
    import asyncio

    from kmodd.core.autoload.decide import AUTOLOAD_FLAGS
    from kmodd.core.kmod.plan import plan_probe
    from kmodd.daemon.loader import Loader
    from kmodd.daemon.snapshot import Snapshot, build_snapshot
    from kmodd.system.kernel import LinuxKernel
    from kmodd.system.kmsg import DevKmsg
    from kmodd.system.root import Root

    root = Root("/")
    kernel = LinuxKernel(root)
    snapshot = build_snapshot(root, moddir, moddir, 1)
    assert isinstance(snapshot, Snapshot), snapshot
    resolver = snapshot.resolver()
    kmsg = DevKmsg(root, keep=True)
    out: dict[str, float] = {}

    async def probe_all(in_pool: bool) -> tuple[int, float]:
        """Every probe `rounds` times: through the loader's threads, or in this thread."""
        loader = Loader(kernel, kernel.modules, kmsg, root, parallel=4, install_timeout=10,
                        environ={})
        steps, started = 0, time.perf_counter()
        for _ in range(rounds):
            for name in names:
                plan = plan_probe(resolver, kernel.modules, resolver.lookup(name)[0],
                                  AUTOLOAD_FLAGS)
                if in_pool:
                    result, _ = await loader.run_chain(plan, AUTOLOAD_FLAGS)
                else:
                    result = loader._run_blocking(plan, AUTOLOAD_FLAGS, frozenset(), False,
                                                  None, None)
                assert result.errno == 0, result
                steps += len(result.steps)
        elapsed = time.perf_counter() - started
        loader.shutdown(wait=True)
        return steps, elapsed

    asyncio.run(probe_all(in_pool=True))  # warm-up: caches, threads
    out["pool_steps"], out["pool_seconds"] = asyncio.run(probe_all(in_pool=True))
    out["thread_steps"], out["thread_seconds"] = asyncio.run(probe_all(in_pool=False))
    return out


def child_libkmod(moddir: str, names: list[str], rounds: int) -> dict[str, float]:
    lk = ctypes.CDLL("libkmod.so.2")
    lk.kmod_new.restype = ctypes.c_void_p
    lk.kmod_new.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lk.kmod_load_resources.argtypes = [ctypes.c_void_p]
    lk.kmod_module_new_from_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                             ctypes.POINTER(ctypes.c_void_p)]
    lk.kmod_module_unref.argtypes = [ctypes.c_void_p]
    printer = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_bool, ctypes.c_char_p)
    lk.kmod_module_probe_insert_module.argtypes = [
        ctypes.c_void_p, ctypes.c_uint, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p]
    ctx = lk.kmod_new(moddir.encode(), None)
    assert lk.kmod_load_resources(ctx) == 0

    def probe(name: str, action: object) -> None:
        mod = ctypes.c_void_p()
        assert lk.kmod_module_new_from_name(ctx, name.encode(), ctypes.byref(mod)) == 0
        err = lk.kmod_module_probe_insert_module(mod, KMOD_PROBE_APPLY_BLACKLIST, None,
                                                 None, None, action)
        assert err == 0, (name, err)
        lk.kmod_module_unref(mod)

    counted: list[int] = []
    count = printer(lambda mod, install, options: counted.append(1))
    for name in names:  # once with print_action, to count the steps; it warms the caches
        probe(name, ctypes.cast(count, ctypes.c_void_p))
    per_round = len(counted)
    started = time.perf_counter()
    for _ in range(rounds):
        for name in names:
            probe(name, None)
    return {"steps": per_round * rounds, "seconds": time.perf_counter() - started}


def run_child(which: str, shim: str, moddir: str, names: list[str],
              rounds: int) -> dict[str, float]:
    env = {**os.environ, "LD_PRELOAD": shim,
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--moddir", moddir,
                           "--modules", ",".join(names), "--rounds", str(rounds)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{which} child failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--modules", default=DEFAULT_MODULES)
    p.add_argument("--child", choices=("kmodd", "libkmod"), help=argparse.SUPPRESS)
    p.add_argument("--moddir", help=argparse.SUPPRESS)
    args = p.parse_args()
    names = args.modules.split(",")
    if args.child:
        work = child_kmodd if args.child == "kmodd" else child_libkmod
        print(json.dumps(work(args.moddir, names, args.rounds)))
        return 0
    sys.path.insert(0, REPO)
    from tests import kerneltree

    tree = kerneltree.debian_kernel_tree()
    moddir = os.path.join(tree.root, "lib", "modules", tree.kver)
    with tempfile.TemporaryDirectory() as tmp:
        shim = build_shim(tmp)
        if shim is None:
            return 1
        lk = run_child("libkmod", shim, moddir, names, args.rounds)
        kd = run_child("kmodd", shim, moddir, names, args.rounds)
    per = len(names)
    print(f"chains of {', '.join(names)}: {int(lk['steps']) // args.rounds} steps per round "
          f"(libkmod), {int(kd['pool_steps']) // args.rounds} (kmodd); {args.rounds} rounds; "
          "finit_module answered 0 by the shim")
    anchor = lk["seconds"] / lk["steps"] * 1e6
    rows = (("libkmod, kmod_module_probe_insert_module", anchor),
            ("kmodd, Loader.run_chain (worker thread)",
             kd["pool_seconds"] / kd["pool_steps"] * 1e6),
            ("kmodd, the plan run in the calling thread",
             kd["thread_seconds"] / kd["thread_steps"] * 1e6))
    for label, us in rows:
        print(f"  {label:44} {us:7.1f} us per step   {us / anchor:5.2f}x libkmod")
    print(f"  ({per} probes per round, lookup by name and the probe list included on both "
          "sides)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
