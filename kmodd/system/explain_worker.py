"""The process that answers one `io.kmodd.Explain` call for the daemon.

An explanation reads module files, modules.dep, `/proc/kallsyms`, Module.symvers and the
kernel log: a second of CPU and tens of MiB of short-lived memory. Done in the daemon, a
stream of them from any local user would hold the interpreter lock against the uevent path
and leave the allocator's high-water mark behind. So the daemon runs each one here, in a
fresh process of its own group: reniced, with its address space capped, killed whole when its
deadline passes, its memory returned to the system when it exits.

Protocol: one JSON request on stdin (`encode_request`), the explanation's wire form
(`kmodd.core.explain.model.to_json`) as JSON on stdout, exit status 0. Anything else (a bad
request, a limit hit) is one line on stderr and a non-zero status.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Mapping
from typing import Any

from kmodd.core.autoload.kmsg import KmsgRecord
from kmodd.core.explain.facts import FailedAttempt
from kmodd.core.priority import Priority

#: How much nicer than the daemon the worker runs (the uevent path comes first).
WORKER_NICE = 10
#: Address space of one worker (the Debian tree's mapped index and one module's ELF fit
#: many times over; a runaway explanation dies with MemoryError instead of growing).
WORKER_ADDRESS_SPACE = 768 * 1024 * 1024
#: Largest request read from stdin.
WORKER_MAX_REQUEST = 1024 * 1024

EXIT_BAD_REQUEST = 2
EXIT_FAILED = 3


def encode_request(*, target: str, root: str, moddir: str, failure: FailedAttempt | None,
                   read_log: bool) -> bytes:
    """The request the daemon writes to the worker's stdin."""
    return json.dumps({
        "target": target, "root": root, "moddir": moddir, "read_log": read_log,
        "failure": None if failure is None else {
            "module": failure.module, "errno": failure.errno, "stage": failure.stage,
            "step": failure.step, "options": failure.options,
            "messages": list(failure.messages), "declined": failure.declined,
            "kmsg": [[r.seq, int(r.level), r.facility, r.usec, r.flag, r.text,
                      [list(f) for f in r.fields]] for r in failure.kmsg],
        },
    }).encode()


def decode_failure(data: Mapping[str, Any] | None) -> FailedAttempt | None:
    """`encode_request`'s failure back; raises ValueError, TypeError or KeyError if damaged."""
    if data is None:
        return None
    kmsg = tuple(KmsgRecord(int(seq), Priority(int(level)), int(facility), int(usec), str(flag),
                            str(text), tuple((str(k), str(v)) for k, v in fields))
                 for seq, level, facility, usec, flag, text, fields in data["kmsg"])
    return FailedAttempt(module=str(data["module"]), errno=int(data["errno"]),
                         stage=data["stage"], step=data["step"], kmsg=kmsg,
                         options=data["options"],
                         messages=tuple(str(m) for m in data["messages"]),
                         declined=bool(data["declined"]))


def _limit_self() -> None:
    os.nice(WORKER_NICE)
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))


def main() -> int:
    """Read one request, write one explanation; the exit status says how it went."""
    _limit_self()
    # Imported under the limits just set (the checklist's imports are most of its memory).
    from kmodd.core.explain.model import to_json
    from kmodd.system import diagnose
    from kmodd.system.root import Root

    raw = sys.stdin.buffer.read(WORKER_MAX_REQUEST + 1)
    try:
        if len(raw) > WORKER_MAX_REQUEST:
            raise ValueError("request too large")
        request = json.loads(raw)
        target, root, moddir = request["target"], request["root"], request["moddir"]
        if not all(isinstance(v, str) for v in (target, root, moddir)):
            raise TypeError("target, root and moddir must be strings")
        failure = decode_failure(request["failure"])
        read_log = bool(request["read_log"])
    except (ValueError, TypeError, KeyError) as e:
        sys.stderr.write(f"explain worker: bad request: {e}\n")
        return EXIT_BAD_REQUEST
    try:
        explanation = diagnose.explain(target, root=Root(root), moddir=moddir,
                                       failure=failure, read_log=read_log)
    except MemoryError:
        sys.stderr.write(f"explain worker: out of memory (limit "
                         f"{WORKER_ADDRESS_SPACE >> 20} MiB of address space)\n")
        return EXIT_FAILED
    sys.stdout.write(json.dumps(to_json(explanation), ensure_ascii=False))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
