"""Subcommands of `python3 tests/e2e/vm` (build, boot; see --help)."""

from __future__ import annotations

import argparse
import json
import sys

from tests.e2e.vm import devices, image
from tests.e2e.vm.machine import VM, Init


def _boot(args: argparse.Namespace) -> int:
    with VM(devices=devices.SETS[args.set](), cpu=args.cpu, name=f"boot-{args.set}",
            append=args.append, init=Init(args.init)) as vm:
        if vm.init is Init.SYSTEMD:
            vm.wait_system_running()
        print(json.dumps(vm.boot_info), file=sys.stderr)
        print(f"run dir: {vm.rundir}", file=sys.stderr)
        rc = 0
        for cmd in args.cmd:
            r = vm.sh(cmd, timeout=args.timeout, check=False)
            sys.stdout.write(r.out)
            sys.stderr.write(r.err)
            print(f"[rc={r.rc} dt={r.dt:.2f}s]", file=sys.stderr)
            rc = rc or (r.rc if r.rc is not None else 1)
        return rc


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 tests/e2e/vm",
                                description="kmodd's QEMU test bed")
    sub = p.add_subparsers(dest="cmd_name", required=True)
    sub.add_parser("build", help="build or reuse the guest image; print its paths")
    b = sub.add_parser("boot", help="boot a guest, run shell commands in it, power off")
    b.add_argument("--set", choices=sorted(devices.SETS), default="none")
    b.add_argument("--cpu", default="max")
    b.add_argument("--append", default="", help="extra kernel command line")
    b.add_argument("--init", choices=[str(i) for i in Init], default=str(Init.AGENT),
                   help="PID 1: the agent's init script (default), or systemd with kmodd's "
                        "units enabled (commands run once the boot transaction is done)")
    b.add_argument("--timeout", type=float, default=300)
    b.add_argument("--cmd", action="append", default=[], help="shell command (repeatable)")
    sub.add_parser("demo", help="what `make demo` runs (see vm/demo.py)", add_help=False)
    if argv[:1] == ["demo"]:
        from tests.e2e.vm import demo

        return demo.main(argv[1:])
    args = p.parse_args(argv)
    if args.cmd_name == "build":
        return image.main([])
    if args.cmd_name == "boot":
        return _boot(args)
    return 2
