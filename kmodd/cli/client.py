"""`kmodctl`'s admin commands: talk to the running daemon over its Varlink socket.

    kmodctl [--json] [--socket PATH] COMMAND [ARGS]

Readable tables by default; `--json` prints the daemon's reply as JSON (JSON lines for
`monitor`). When the daemon is not running, one line says so and the exit code is
EXIT_NOT_RUNNING. Every command, its arguments and its method are in `COMMANDS`.

`explain TARGET` is the exception: it asks the daemon (which knows the failures it saw)
and, when no daemon runs, computes the same explanation here (kmodd.system.diagnose) and
says so. `explain --try TARGET [OPTIONS]` loads the module here, as modprobe would, and
explains that attempt (errno, cause, the kernel's log lines). It exits EXIT_PROBLEMS when
a problem was found.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, BinaryIO

from kmodd import __version__
from kmodd.cli.plot import device_plot, module_plot
from kmodd.cli.timeline import (
    NotTimed,
    critical_chain,
    format_usec,
    module_rows,
    render_chain,
)
from kmodd.core.explain.model import (
    EVIDENCE_INDENT,
    ExplanationFormatError,
    Verdict,
    from_json,
    render_text,
    to_json,
)
from kmodd.core.kmod.normalize import path_ends_with_kmod_ext
from kmodd.system.control_client import VarlinkClient, VarlinkClientError
from kmodd.system.root import Root

if TYPE_CHECKING:
    from kmodd.system.kernel import KernelPort

#: Exit codes (the LSB init-script meanings for 3 and 4).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION = 4
#: Not a Varlink error: the name under which a reply of the wrong shape is reported.
MALFORMED_REPLY = "kmodctl.MalformedReply"
#: `status`: the daemon runs degraded (no usable module index), for scripts.
EXIT_DEGRADED = 1
#: `explain` found at least one problem.
EXIT_PROBLEMS = 1

#: Where the daemon listens, under the Root; $KMODD_SOCKET or --socket override it.
SOCKET_PATH = "/run/kmodd/io.kmodd"
SOCKET_ENV = "KMODD_SOCKET"
INTERFACE = "io.kmodd"
#: Seconds to wait for a reply (monitor waits forever).
CALL_TIMEOUT = 30.0
#: Outcomes (`core.autoload.outcome.Outcome`'s wire values: kmodctl does not import the
#: daemon's tables, to start fast) that make `load`/`unload` exit with EXIT_FAILURE.
FAILED_OUTCOMES = frozenset({"failed", "not-found", "blacklisted"})

# -- formatting ---------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) if rows else len(headers[i])
              for i in range(len(headers))]
    lines = []
    for row in (headers, *rows):
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _duration(item: Mapping[str, Any]) -> int | None:
    start, end = item.get("started_usec"), item.get("finished_usec")
    if start is None or end is None:
        return None
    return int(end) - int(start)


def _steps(plan: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for step in plan:
        line = f"{step['action']} {step['module']}"
        if step.get("options"):
            line += f" {step['options']}"
        if step.get("reason"):
            line += f" ({step['reason']})"
        lines.append(line)
    return lines


# -- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    client: VarlinkClient
    args: Sequence[str]
    json: bool
    dry_run: bool
    output: str | None
    out: Callable[[str], None]
    by_device: bool = False


def _status(ctx: Context) -> int:
    """The daemon's state and counters; EXIT_DEGRADED when it runs without a usable index."""
    reply = ctx.client.call(f"{INTERFACE}.GetStatus")
    s, st = reply["status"], reply["statistics"]
    code = EXIT_DEGRADED if s.get("state") == "degraded" else EXIT_OK
    if ctx.json:
        ctx.out(json.dumps(reply, indent=2) + "\n")
        return code
    dropped = sum(st["uevents_dropped"].values())
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(st["outcomes"].items())) or "none"
    rows = [
        ("State", f"{s['state']}{' (dry run)' if s['dry_run'] else ''}"),
        *((("Degraded", s["degraded_reason"]),) if s.get("degraded_reason") else ()),
        *((("Previous", previous_words(s["previous_instance"])),)
          if s.get("previous_instance") else ()),
        *((("Load record", s["records_failure"]),) if s.get("records_failure") else ()),
        *((("Kernel requests", s["kernel_requests"]),) if s.get("kernel_requests") else ()),
        ("Version", s["version"]),
        ("PID", str(s["pid"])),
        ("Kernel", s["kernel_release"]),
        ("Uptime", format_usec(s["uptime_usec"])),
        ("Ready after", format_usec(s.get("ready_usec"))),
        ("Coldplug", "done" if s["coldplug_done"] else "running"),
        ("Index generation", str(s["index_generation"])),
        ("Uevents", f"{st['uevents_received']} received, {st['uevents_accepted']} accepted, "
                    f"{dropped} dropped"),
        ("Lost/resyncs", f"{st['overruns']} overruns, {st['resyncs']} resyncs"),
        ("Devices", str(st["devices"])),
        ("Outcomes", outcomes),
        ("Queue", str(st["queue_depth"])),
        ("Connections", str(st["control_connections"])),
    ]
    width = max(len(k) for k, _ in rows)
    ctx.out("".join(f"{k.rjust(width)}: {v}\n" for k, v in rows))
    return code


def previous_words(p: Mapping[str, Any]) -> str:
    """`kmodctl status`'s line about the previous instance of this boot."""
    if p["stopped"]:
        return f"pid {p['pid']} stopped; it had loaded {p['modules']} of the live modules"
    text = (f"pid {p['pid']} ended without stopping; it had loaded {p['modules']} of the "
            "live modules")
    if p["unfinished"]:
        text += f", {p['unfinished']} of them while it ended"
    return text


def reprobe_words(r: Mapping[str, Any]) -> str:
    """`reprobed: bound (ahci)`, as the daemon's records say it."""
    match r["result"]:
        case "bound":
            return f"reprobed: bound ({r.get('driver')})"
        case "still-unbound":
            return "reprobed: still unbound"
        case "timed-out":
            return "reprobed: no answer"
        case _:
            return f"reprobe refused (errno {r.get('errno')})"


def _devices(ctx: Context) -> int:
    params = {"devpath": ctx.args[0]} if ctx.args else {}
    reply = ctx.client.call(f"{INTERFACE}.ListDevices", params)
    if ctx.json:
        ctx.out(json.dumps(reply, indent=2) + "\n")
        return EXIT_OK
    rows = [
        (d["devpath"], d.get("modalias") or "-", ",".join(d["candidates"]) or "-",
         (d.get("outcome") or "-") + (f", {reprobe_words(d['reprobe'])}"
                                      if d.get("reprobe") else ""),
         format_usec(_duration(d)))
        for d in reply["devices"]
    ]
    ctx.out(table(("DEVPATH", "MODALIAS", "MODULES", "OUTCOME", "TIME"), rows))
    if ctx.args:
        for d in reply["devices"]:
            for key in ("subsystem", "driver", "vendor", "model"):
                if d.get(key):
                    ctx.out(f"{key.capitalize()}: {d[key]}\n")
            if d.get("reprobe"):
                ctx.out(f"Reprobe: {reprobe_words(d['reprobe'])}: {d['reprobe']['reason']}\n")
            for line in _steps(d["plan"]):
                ctx.out(f"  {line}\n")
    return EXIT_OK


def _modules(ctx: Context) -> int:
    params = {"name": ctx.args[0]} if ctx.args else {}
    reply = ctx.client.call(f"{INTERFACE}.ListModules", params)
    if ctx.json:
        ctx.out(json.dumps(reply, indent=2) + "\n")
        return EXIT_OK
    rows = [
        (m["name"], m["state"], m.get("outcome") or "-", format_usec(_duration(m)),
         str(len(m["devices"])), loaded_by_words(m))
        for m in reply["modules"]
    ]
    ctx.out(table(("MODULE", "STATE", "OUTCOME", "TIME", "DEVICES", "LOADED BY"), rows))
    return EXIT_OK


def loaded_by_words(m: Mapping[str, Any]) -> str:
    """`kmodctl modules`' LOADED BY column."""
    match m.get("loaded_by"):
        case "kmodd":
            return "kmodd"
        case "previous-instance":
            return f"kmodd (pid {m.get('loaded_by_pid')})"
        case "before-start":
            return "before kmodd"
        case "not-kmodd":
            return "not kmodd"
        case "kernel-request":
            return "kernel request"
        case "initramfs":
            return "initramfs"
        case _:
            return "-"


def _why(ctx: Context) -> int:
    reply = ctx.client.call(f"{INTERFACE}.Why", {"target": ctx.args[0]})
    if ctx.json:
        ctx.out(json.dumps(reply, indent=2) + "\n")
        return EXIT_OK
    r = reply["report"]
    if r.get("devpath"):
        ctx.out(f"Device: {r['devpath']}\n")
    if r.get("modalias"):
        ctx.out(f"Modalias: {r['modalias']}\n")
    for c in r["candidates"]:
        ctx.out(f"  {c['module']} ({c['source']}): {c['decision']}: {c['reason']}\n")
    ctx.out(f"{r['summary']}\n")
    return EXIT_OK


def _explain(ctx: Context) -> int:

    reply = ctx.client.call(f"{INTERFACE}.Explain", {"module": explain_target(ctx.args[0])})
    try:
        expl = from_json(reply.get("explanation"))
    except ExplanationFormatError as e:
        raise VarlinkClientError(MALFORMED_REPLY, {"reason": str(e)}) from None
    seen = [str(line) for line in reply.get("seen") or ()]
    return _show_explanation(ctx.out, expl, ctx.json, "kmodd", seen)


def _show_explanation(out: Callable[[str], None], expl: Any, as_json: bool, by: str,
                      seen: Sequence[str] = ()) -> int:
    """Print an explanation (kmodd.core.explain.model.Explanation) computed by `by`, and what the
    daemon did with the module (`seen`, when the daemon computed it)."""

    if as_json:
        shown: dict[str, Any] = {"computed_by": by, "explanation": to_json(expl)}
        if seen:
            shown["seen"] = list(seen)
        out(json.dumps(shown, indent=2) + "\n")
    else:
        text = f"(computed by {by})\n" + render_text(expl)
        if seen:
            text += "\nSeen by kmodd:\n" + "".join(f"{EVIDENCE_INDENT}{s}\n" for s in seen)
        out(text)
    return EXIT_PROBLEMS if expl.verdict is Verdict.PROBLEM else EXIT_OK


def _explain_here(root: Root, environ: Mapping[str, str], args: Sequence[str], as_json: bool,
                  try_load: bool, why: str, out: Callable[[str], None],
                  kernel: KernelPort | None) -> int:
    """`explain` without the daemon: the same explanation, computed by this process."""
    # Here, not at the top: the checklist's imports cost `kmodctl status` and every other
    # query some 100 ms (`python3 -X importtime -c 'import kmodd.system.diagnose'`).
    from kmodd.system.attempt import attempt
    from kmodd.system.diagnose import default_moddir, explain

    target = args[0]
    moddir = default_moddir(root)
    failure = None
    if try_load:
        options = " ".join(args[1:]) or None
        failure = attempt(target, root=root, moddir=moddir, kernel=kernel, options=options,
                          environ=environ)
    expl = explain(target, root=root, moddir=moddir, kernel=kernel, failure=failure)
    return _show_explanation(out, expl, as_json, f"kmodctl ({why})")


def _results(ctx: Context, reply: Mapping[str, Any]) -> int:
    if ctx.json:
        ctx.out(json.dumps(reply, indent=2) + "\n")
    else:
        for r in reply["results"]:
            ctx.out(f"{r['module']}: {r['outcome']}: {r['message']}\n")
            for line in _steps(r["plan"]):
                ctx.out(f"  {line}\n")
    failed = any(r["outcome"] in FAILED_OUTCOMES for r in reply["results"])
    return EXIT_FAILURE if failed else EXIT_OK


def _load(ctx: Context) -> int:
    params: dict[str, Any] = {"modules": list(ctx.args)}
    if ctx.dry_run:
        params["dry_run"] = True
    return _results(ctx, ctx.client.call(f"{INTERFACE}.Load", params))


def _unload(ctx: Context) -> int:
    return _results(ctx, ctx.client.call(f"{INTERFACE}.Unload", {"modules": list(ctx.args)}))


def _reload(ctx: Context) -> int:
    reply = ctx.client.call(f"{INTERFACE}.Reload")
    generation = reply["generation"]
    ctx.out(json.dumps(reply) + "\n" if ctx.json else f"Reloaded (generation {generation})\n")
    return EXIT_OK


def _monitor(ctx: Context) -> int:
    for reply in ctx.client.stream(f"{INTERFACE}.Monitor"):
        event = reply["event"]
        if ctx.json:
            ctx.out(json.dumps(event) + "\n")
            continue
        where = " ".join(event[k] for k in ("devpath", "module") if event.get(k))
        ctx.out(f"{event['usec'] / 1e6:12.6f} {event['kind']:<10} {event['message']}"
                + (f" [{where}]" if where else "") + "\n")
    return EXIT_OK


def _blame(ctx: Context) -> int:
    modules = ctx.client.call(f"{INTERFACE}.ListModules")["modules"]
    timed = sorted(((d, m["name"]) for m in modules if (d := _duration(m)) is not None),
                   key=lambda pair: (-pair[0], pair[1]))
    if ctx.json:
        ctx.out(json.dumps([{"module": n, "duration_usec": d} for d, n in timed], indent=2)
                + "\n")
        return EXIT_OK
    width = max((len(format_usec(d)) for d, _ in timed), default=0)
    ctx.out("".join(f"{format_usec(d).rjust(width)} {n}\n" for d, n in timed))
    return EXIT_OK


def _write(ctx: Context, text: str) -> None:
    if ctx.output:
        with open(ctx.output, "w") as f:
            f.write(text)
    else:
        ctx.out(text)


def _plot(ctx: Context) -> int:
    """One row per module (cli.plot.module_plot), or per device with --by-device."""
    if ctx.by_device:
        devices = ctx.client.call(f"{INTERFACE}.ListDevices")["devices"]
        if ctx.json:
            _write(ctx, json.dumps([{
                "devpath": d["devpath"], "modules": d["candidates"],
                "queued_usec": d.get("queued_usec"),
                "started_usec": d["started_usec"], "finished_usec": d["finished_usec"],
                "outcome": d.get("outcome"),
            } for d in devices if d.get("started_usec") is not None
                and d.get("finished_usec") is not None], indent=2) + "\n")
        else:
            _write(ctx, device_plot(devices))
        return EXIT_OK
    rows = module_rows(ctx.client.call(f"{INTERFACE}.ListModules")["modules"])
    chain = critical_chain(rows, {})
    if ctx.json:
        _write(ctx, json.dumps([{
            "module": r.name, "queued_usec": r.queued_usec, "started_usec": r.started_usec,
            "finished_usec": r.finished_usec, "outcome": r.outcome, "after": r.after,
            "device": r.device, "critical": any(link.name == r.name for link in chain),
        } for r in rows], indent=2) + "\n")
    else:
        _write(ctx, module_plot(rows, frozenset(link.name for link in chain
                                                if not link.device)))
    return EXIT_OK


def _critical_chain(ctx: Context) -> int:
    """The chain of waits that bounded the coldplug, or MODULE's going live."""
    rows = module_rows(ctx.client.call(f"{INTERFACE}.ListModules")["modules"])
    devices = ctx.client.call(f"{INTERFACE}.ListDevices")["devices"]
    queued = {d["devpath"]: d["queued_usec"] for d in devices
              if d.get("queued_usec") is not None}
    module = ctx.args[0] if ctx.args else None
    try:
        links = critical_chain(rows, queued, module)
    except NotTimed:
        raise CommandError(f"critical-chain: kmodd has no timed load of {module} (it was "
                           "not loaded by this kmodd, or not loaded)") from None
    if ctx.json:
        ctx.out(json.dumps([{
            "name": link.name, "kind": "device" if link.device else "module",
            "at_usec": link.at_usec, "took_usec": link.took_usec,
        } for link in links], indent=2) + "\n")
    elif links:
        ctx.out(render_chain(links))
    else:
        ctx.out("kmodd has no timed module load.\n")
    return EXIT_OK


class CommandError(Exception):
    """A command cannot answer: the message (without "kmodctl: "), exit EXIT_FAILURE."""


class Operand(StrEnum):
    """What a command's operands are, for shell completion."""

    NONE = "none"
    MODULE = "module"


@dataclass(frozen=True, slots=True)
class Option:
    """One option of kmodctl: its spellings, the name of its value (if it takes one), and
    what it does."""

    names: tuple[str, ...]
    value: str | None
    description: str


@dataclass(frozen=True, slots=True)
class Command:
    """One row of the command table: what runs, how many operands, the usage line, a one-line
    summary (`kmodctl --help`), a description (`kmodctl COMMAND --help`, kmodctl(8)), the
    options that go with it, and what its operands are."""

    run: Callable[[Context], int]
    min_args: int
    max_args: int | None
    usage: str
    summary: str
    description: str
    options: tuple[Option, ...] = ()
    operand: Operand = Operand.NONE


#: Options every command takes.
GLOBAL_OPTIONS: tuple[Option, ...] = (
    Option(("--json",), None,
           "Print the daemon's reply as JSON (JSON lines for monitor) instead of tables."),
    Option(("--socket",), "PATH",
           f"Talk to the daemon at PATH instead of ${SOCKET_ENV}, else {SOCKET_PATH}."),
    Option(("-h", "--help"), None,
           "Print the commands, or with a command its usage and description, and exit."),
    Option(("-V", "--version"), None, "Print kmodctl's version and exit."),
)

COMMANDS: Mapping[str, Command] = {
    "status": Command(
        _status, 0, 0, "status", "show the daemon's state and counters",
        "Show the daemon's state, version, pid, kernel release, uptime, how long it took to "
        "become ready, whether coldplug is done, the index generation, and its uevent, device, "
        "outcome, queue and connection counters. Exits 1 when the daemon runs degraded (no "
        "usable module index), and then names the reason."),
    "devices": Command(
        _devices, 0, 1, "devices [DEVPATH]", "list the devices seen and what was loaded",
        "List every device the daemon has seen: its devpath, modalias, candidate modules, the "
        "outcome and how long the loads took. With DEVPATH, show that device alone with its "
        "subsystem, driver, vendor and model and the plan that was run for it."),
    "modules": Command(
        _modules, 0, 1, "modules [MODULE]", "list the modules the daemon handled",
        "List the modules the daemon has handled: state, outcome, load time and how many "
        "devices wanted each. With MODULE, show that module alone.",
        operand=Operand.MODULE),
    "why": Command(
        _why, 1, 1, "why DEVPATH|MODALIAS", "say why a device got the modules it got",
        "Say which modules match the device at DEVPATH (or the modalias MODALIAS), where each "
        "match comes from, and what the daemon decided for each (loaded, blacklisted, "
        "skipped) and why."),
    "explain": Command(
        _explain, 1, None, "explain [--try] MODULE|ALIAS|PATH [OPTIONS]",
        "explain in plain words why a module does not load",
        "Explain in plain words why a module, an alias or a module file does not load (or "
        "that nothing stands in its way), with the evidence, and what the daemon saw of it. "
        "When no daemon runs, kmodctl computes the same explanation itself and says so. "
        "Exits 1 when a problem was found.",
        (Option(("--try",), None,
                "Load the module here, as modprobe would, with the module OPTIONS that follow, "
                "and explain that attempt: the errno, its cause and the kernel's log lines."),),
        Operand.MODULE),
    "load": Command(
        _load, 1, None, "load [--dry-run] MODULE...", "load modules through the daemon",
        "Ask the daemon to load each MODULE with its dependencies and modprobe.d policy, and "
        "print each outcome with the plan that was run. Exits 1 when a module failed, was not "
        "found, was blacklisted or was refused. Needs root or control_group.",
        (Option(("--dry-run",), None, "Print the plan only; load nothing."),),
        Operand.MODULE),
    "unload": Command(
        _unload, 1, None, "unload MODULE...", "unload modules through the daemon",
        "Ask the daemon to unload each MODULE, and print each outcome. Exits 1 when a module "
        "could not be unloaded. Needs root or control_group.",
        operand=Operand.MODULE),
    "reload": Command(
        _reload, 0, 0, "reload", "re-read the module index and modprobe.d",
        "Make the daemon re-read the module index and modprobe.d (as SIGHUP does) and print "
        "the new index generation. A reload that succeeds leaves degraded mode and rescans "
        "sysfs. Needs root or control_group."),
    "monitor": Command(
        _monitor, 0, 0, "monitor", "print the daemon's events as they happen",
        "Print the daemon's events (uevents, loads, outcomes, reloads) as they happen, until "
        "interrupted."),
    "blame": Command(
        _blame, 0, 0, "blame", "list module loads by how long they took",
        "List the modules the daemon loaded, the slowest first, with how long each load "
        "took."),
    "plot": Command(
        _plot, 0, 0, "plot [--by-device] [-o FILE]", "draw the coldplug timeline as SVG",
        "Draw an SVG timeline with one row per module the daemon loaded: a thin bar while it "
        "waited (from when its load was queued until its insert started: for a worker, for "
        "its dependencies) and a thick bar while it was inside finit_module, coloured by "
        "outcome, with a legend and round time ticks. The modules of the critical chain (see "
        "critical-chain) are outlined in red.",
        (Option(("--by-device",), None,
                "Draw one row per device instead, from when its uevent was queued to when its "
                "last load ended."),
         Option(("-o", "--output"), "FILE", "Write to FILE instead of standard output."))),
    "critical-chain": Command(
        _critical_chain, 0, 1, "critical-chain [MODULE]",
        "print the chain of loads that bounded the coldplug",
        "Print the chain of waits that bounded the coldplug (the module that went live last), "
        "or MODULE's going live, as systemd-analyze critical-chain does for units: the "
        "module, then the module it waited for last, and so on, then the device whose load "
        "it was, each indented under the one that waited for it. The time a module went "
        "live (a device: its uevent was queued) follows \"@\", the time its insert took "
        "follows \"+\"; times count from the daemon's start.",
        operand=Operand.MODULE),
}

#: Exit codes and what they mean, as kmodctl(8) lists them.
EXIT_STATUS: Mapping[int, str] = {
    EXIT_OK: "Success.",
    EXIT_FAILURE: "The command failed: a load or unload failed, explain found a problem, "
                  "status found the daemon degraded, or the daemon answered with an error.",
    EXIT_USAGE: "Bad usage: an unknown command or option, or the wrong operands.",
    EXIT_NOT_RUNNING: "kmodd is not running (nobody listens on the control socket).",
    EXIT_PERMISSION: "Permission denied: the command needs root or control_group.",
}


def usage() -> str:
    """`kmodctl --help`: the synopsis and every command with its one-line summary."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: kmodctl [--json] [--socket PATH] COMMAND [ARGS]",
             "       kmodctl COMMAND --help", "       kmodctl --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "kmod tools: kmodctl modprobe|modinfo|depmod|insmod|rmmod|lsmod ..."]
    return "\n".join(lines) + "\n"


def command_help(name: str) -> str:
    """`kmodctl COMMAND --help` and `kmodctl help COMMAND`: the usage line, the description
    wrapped to 79 columns, and the command's options."""
    command = COMMANDS[name]
    lines = [f"usage: kmodctl {command.usage}", ""]
    lines += textwrap.wrap(command.description, 79)
    if command.options:
        lines += ["", "options:"]
        for option in command.options:
            spelled = ", ".join(option.names) + (f" {option.value}" if option.value else "")
            lines.append(f"  {spelled}")
            lines += textwrap.wrap(option.description, 79, initial_indent="      ",
                                   subsequent_indent="      ")
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class _Options:
    json: bool = False
    dry_run: bool = False
    socket: str | None = None
    output: str | None = None
    help: bool = False
    version: bool = False
    try_load: bool = False
    by_device: bool = False


def _parse(argv: Sequence[str]) -> tuple[_Options, list[str]]:
    options = _Options()
    words: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            words += args[i:]
            break
        if arg in ("--socket", "-o", "--output"):
            if i >= len(args):
                raise ValueError(f"{arg} needs a value")
            value, i = args[i], i + 1
            if arg == "--socket":
                options.socket = value
            else:
                options.output = value
        elif arg.startswith("--socket="):
            options.socket = arg.split("=", 1)[1]
        elif arg.startswith("--output="):
            options.output = arg.split("=", 1)[1]
        elif arg == "--json":
            options.json = True
        elif arg == "--dry-run":
            options.dry_run = True
        elif arg == "--try":
            options.try_load = True
        elif arg == "--by-device":
            options.by_device = True
        elif arg in ("-h", "--help"):
            options.help = True
        elif arg in ("-V", "--version"):
            options.version = True
        elif arg.startswith("-") and arg != "-":
            raise ValueError(f"unknown option {arg}")
        else:
            words.append(arg)
    return options, words


def socket_path(root: Root, environ: Mapping[str, str], option: str | None) -> str:
    return option or environ.get(SOCKET_ENV) or root.path(SOCKET_PATH)


#: Error names with their own exit code and wording; a `reason` the daemon gives follows
#: the words after a colon, other parameters in parentheses.
ERROR_EXITS: Mapping[str, tuple[int, str]] = {
    "org.varlink.service.PermissionDenied": (EXIT_PERMISSION, "permission denied (run as root)"),
    "org.varlink.service.InvalidParameter": (EXIT_USAGE, "the daemon refused a parameter"),
    "io.kmodd.PermissionDenied": (EXIT_PERMISSION, "permission denied"),
    "io.kmodd.NoSuchDevice": (EXIT_FAILURE, "no such device"),
    "io.kmodd.NoSuchModule": (EXIT_FAILURE, "no such module"),
    "io.kmodd.Busy": (EXIT_FAILURE, "the daemon is busy"),
    "io.kmodd.TimedOut": (EXIT_FAILURE, "the daemon gave up"),
    "io.kmodd.RequestTooLarge": (EXIT_FAILURE, "the request is larger than the daemon takes"),
    "io.kmodd.InvalidRequest": (EXIT_FAILURE, "the daemon did not understand the request"),
    "io.kmodd.InternalError": (EXIT_FAILURE, "the daemon failed (its log says more)"),
    MALFORMED_REPLY: (EXIT_FAILURE, "the daemon's reply is malformed"),
}
#: Refusals said without the command's name: they are about the connection, not the call.
CONNECTION_REFUSALS: Mapping[str, tuple[int, str]] = {
    "io.kmodd.TooManyConnections": (EXIT_FAILURE, "the daemon refused the connection"),
}


def error_words(command: str, error: VarlinkClientError) -> tuple[int, str]:
    """The exit code and the line (without "kmodctl: ") for an error reply."""
    refusal = CONNECTION_REFUSALS.get(error.name)
    code, text = refusal or ERROR_EXITS.get(error.name, (EXIT_FAILURE, error.name))
    parameters = dict(error.parameters)
    reason = parameters.pop("reason", None)
    if refusal is not None:
        parameters.pop("limit", None)  # the reason says it
    line = text if refusal is not None else f"{command}: {text}"
    if reason is not None:
        line += f": {reason}"
    if parameters:
        line += " (" + ", ".join(f"{k}={v}" for k, v in parameters.items()) + ")"
    return code, line


def explain_target(target: str, cwd: str | None = None) -> str:
    """What `explain` sends for TARGET: a path the user typed made absolute (the daemon's
    working directory is not the user's); a module name or alias as it is."""
    if target.startswith("/"):
        return target
    if "/" in target or (path_ends_with_kmod_ext(target) and os.path.exists(target)):
        return os.path.join(cwd if cwd is not None else os.getcwd(), target)
    return target


def run(
    argv: Sequence[str],
    *,
    root: Root,
    stdout: BinaryIO,
    stderr: BinaryIO,
    environ: Mapping[str, str],
    kernel: KernelPort | None = None,
) -> int:
    """kmodctl's admin commands (argv[0] is the program name; `kernel`: a simulated kernel
    for `explain` in tests)."""

    def out(text: str) -> None:
        stdout.write(text.encode())
        stdout.flush()

    def err(text: str) -> None:
        stderr.write(f"kmodctl: {text}\n".encode())
        stderr.flush()

    try:
        options, words = _parse(argv[1:])
    except ValueError as e:
        err(str(e))
        return EXIT_USAGE
    if words[:1] == ["help"]:
        options.help, words = True, words[1:]
    if options.help:
        if not words:
            out(usage())
            return EXIT_OK
        if words[0] not in COMMANDS:
            err(f"unknown command '{words[0]}'; see kmodctl --help")
            return EXIT_USAGE
        out(command_help(words[0]))
        return EXIT_OK
    if options.version:
        out(f"kmodctl {__version__}\n")
        return EXIT_OK
    if not words:
        stderr.write(usage().encode())
        return EXIT_USAGE
    name, args = words[0], words[1:]
    command = COMMANDS.get(name)
    if command is None:
        err(f"unknown command '{name}'; see kmodctl --help")
        return EXIT_USAGE
    if len(args) < command.min_args or (command.max_args is not None
                                        and len(args) > command.max_args):
        err(f"usage: kmodctl {command.usage}")
        return EXIT_USAGE
    if options.try_load and name != "explain":
        err("--try goes with explain only")
        return EXIT_USAGE
    if options.by_device and name != "plot":
        err("--by-device goes with plot only")
        return EXIT_USAGE
    if name == "explain" and len(args) > 1 and not options.try_load:
        err(f"usage: kmodctl {command.usage} (module options go with --try)")
        return EXIT_USAGE
    path = socket_path(root, environ, options.socket)
    timeout = None if name == "monitor" else CALL_TIMEOUT
    if name == "explain" and options.try_load:
        return _explain_here(root, environ, args, options.json, True,
                             "a load attempted here", out, kernel)
    try:
        client = VarlinkClient(path, timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        if name == "explain":
            return _explain_here(root, environ, args, options.json, False,
                                 "kmodd is not running", out, kernel)
        err(f"kmodd is not running (no one listens on {path})")
        return EXIT_NOT_RUNNING
    except PermissionError:
        err(f"cannot connect to {path}: permission denied")
        return EXIT_PERMISSION
    ctx = Context(client, args, options.json, options.dry_run, options.output, out,
                  options.by_device)
    try:
        with client:
            return command.run(ctx)
    except VarlinkClientError as e:
        code, line = error_words(name, e)
        err(line)
        return code
    except CommandError as e:
        err(str(e))
        return EXIT_FAILURE
    except TimeoutError:
        err(f"{name}: the daemon did not answer within {CALL_TIMEOUT:g} s")
        return EXIT_FAILURE
    except (ConnectionError, OSError) as e:
        err(f"{name}: lost the connection to kmodd: {e}")
        return EXIT_NOT_RUNNING
    except KeyboardInterrupt:
        return EXIT_OK
