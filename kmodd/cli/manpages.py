"""The manual pages kmodd(8), kmodctl(8) and kmodd.conf(5), generated from the code's tables.

Tables in, roff text out: the settings table (`core.settings.SETTINGS`), the daemon's exit
codes (`core.exitcodes.EXIT_STATUS`), kmodctl's command table, options and exit codes
(`cli.client`) and the kmod front ends (`cli.kmodctl.KMOD_TOOLS`). The pages committed in
`man/` are this module's output (a test keeps them equal); regenerate them with

    python3 -m kmodd.cli.manpages --write man/
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kmodd import __version__
from kmodd.cli.client import COMMANDS, EXIT_STATUS, GLOBAL_OPTIONS, SOCKET_ENV, Command, Option
from kmodd.cli.kmodctl import KMOD_TOOLS, ROOT_ENV, Tool
from kmodd.core.exitcodes import EXIT_STATUS as KMODD_EXIT_STATUS
from kmodd.core.runpaths import POLICY_FILE
from kmodd.core.settings import (
    CONFIG_FILE,
    KERNEL_PREFIX,
    SETTINGS,
    Kind,
    Setting,
    format_default,
    format_size,
)
from kmodd.system.instance import LOCK_FILE
from kmodd.system.loadrecords import RECORD_FILE

#: The placeholder for a setting's value, by kind.
METAVARS: Mapping[Kind, str] = {
    Kind.BOOL: "BOOL",
    Kind.INT: "N",
    Kind.SIZE: "SIZE",
    Kind.DURATION: "DURATION",
    Kind.PATH: "PATH",
    Kind.CHOICE: "WORD",
    Kind.GROUP: "GROUP",
    Kind.ALIASES: "ALIASES",
}
#: The manual's title in the page header, by section.
MANUALS: Mapping[int, str] = {5: "File Formats", 8: "System Administration"}


@dataclass(frozen=True, slots=True)
class Page:
    """One manual page: its name, its section and its roff text."""

    name: str
    section: int
    text: str

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.section}"


# -- roff ---------------------------------------------------------------------------------

_CODE = re.compile(r"`([^`]+)`")


def escape(text: str) -> str:
    """Plain text for roff: backslashes kept, a leading dot or quote made harmless."""
    text = text.replace("\\", "\\e")
    return "\\&" + text if text[:1] in (".", "'") else text


def code(text: str) -> str:
    """Text typed as it is (an option, a path): never hyphenated; its hyphens are minus
    signs."""
    return "\\%" + escape(text).replace("-", "\\-")


def bold(text: str) -> str:
    return f"\\fB{code(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{code(text)}\\fR"


def prose(text: str) -> str:
    """A sentence with `code` spans set in bold."""
    parts = _CODE.split(text)
    return "".join(bold(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def sentence(text: str) -> str:
    """A table's lower-case description as a sentence: capital first, a full stop last."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def header(name: str, section: int) -> list[str]:
    return [f'.TH {name.upper()} {section} "" "kmodd {__version__}" "{MANUALS[section]}"']


def section(title: str, *paragraphs: str) -> list[str]:
    lines = [f".SH {title}"]
    for i, paragraph in enumerate(paragraphs):
        if i:
            lines.append(".PP")
        lines.append(paragraph)
    return lines


def item(tag: str, *body: str) -> list[str]:
    """A tagged paragraph (.TP): the tag on its own line, then the body."""
    lines = [".TP", tag]
    for i, paragraph in enumerate(body):
        if i:
            lines.append(".IP")
        lines.append(paragraph)
    return lines


def see_also(*pages: str) -> list[str]:
    refs = [re.fullmatch(r"(.+)\((\d)\)", p) for p in pages]
    parts = [f".BR {m.group(1)} ({m.group(2)}){',' if i < len(pages) - 1 else ''}"
             for i, m in enumerate(r for r in refs if r is not None)]
    return [".SH SEE ALSO", *parts]


def render(lines: Sequence[str]) -> str:
    return "\n".join(lines) + "\n"


# -- settings -----------------------------------------------------------------------------


def _bound(setting: Setting, value: float) -> str:
    if setting.kind is Kind.SIZE:
        return format_size(int(value))
    if setting.kind is Kind.DURATION and value:
        return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() \
        else str(int(value))


def setting_facts(setting: Setting) -> str:
    """The default, the allowed values and the kernel command line's spelling."""
    facts = [f"Default: {bold(format_default(setting))}."]
    if setting.minimum is not None and setting.maximum is not None:
        facts.append(f"From {bold(_bound(setting, setting.minimum))} "
                     f"to {bold(_bound(setting, setting.maximum))}.")
    if setting.choices:
        facts.append("One of " + ", ".join(bold(c) for c in setting.choices) + ".")
    return " ".join(facts)


def daemon_option(setting: Setting) -> list[str]:
    option = f"--{setting.name.replace('_', '-')}"
    kernel = f"{KERNEL_PREFIX}{setting.name}"
    if setting.kind is Kind.BOOL:
        tag = f"{bold(option)}, {bold(f'--no-{option[2:]}')}, {bold(option + '=')}{italic('BOOL')}"
        cmdline = (f"On the kernel command line: {bold(kernel + '=')}{italic('BOOL')}, or "
                   f"{bold(kernel)} alone for yes.")
    else:
        metavar = METAVARS[setting.kind]
        tag = f"{bold(option + '=')}{italic(metavar)}"
        cmdline = f"On the kernel command line: {bold(kernel + '=')}{italic(metavar)}."
    return item(tag, f"{prose(sentence(setting.description))} {setting_facts(setting)}",
                cmdline)


def config_option(setting: Setting) -> list[str]:
    tag = f"{bold(setting.name + ' =')} {italic(METAVARS[setting.kind])}"
    return item(tag, f"{prose(sentence(setting.description))} {setting_facts(setting)}")


VALUE_KINDS = (
    (Kind.BOOL, "yes or no; also true/false, on/off, 1/0."),
    (Kind.INT, "a whole number."),
    (Kind.SIZE, "bytes, with an optional K, M or G suffix (powers of 1024): 128M."),
    (Kind.DURATION, "seconds, with an optional ms, s or min suffix: 500ms, 10s, 2min."),
    (Kind.PATH, "an absolute path."),
    (Kind.CHOICE, "one of the words the setting lists."),
    (Kind.GROUP, "a group name or number; empty for none."),
    (Kind.ALIASES, "module aliases (net-pf-33, fs-cramfs) separated by spaces or commas; "
                   "empty for none."),
)

PRECEDENCE = (
    f"Sources, later ones winning: the built-in defaults, then {bold(CONFIG_FILE)} (or the file "
    f"{bold('--config')} names), then kmodd's command line "
    f"({bold('--')}{italic('name')}{bold('=')}{italic('value')}), then the kernel command line "
    f"({bold(KERNEL_PREFIX)}{italic('name')}{bold('=')}{italic('value')}). The kernel command "
    "line wins because it is what an administrator can still change when a broken setting "
    "keeps the system from booting."
)


def exit_status(table: Mapping[int, str]) -> list[str]:
    lines = [".SH EXIT STATUS"]
    for code_, meaning in table.items():
        lines += item(bold(str(code_)), escape(meaning))
    return lines


# -- kmodd(8) -----------------------------------------------------------------------------


def kmodd_page(settings: Sequence[Setting], exits: Mapping[int, str]) -> Page:
    """kmodd(8): the daemon, its options (one per setting), signals, socket, exit codes."""
    lines = header("kmodd", 8)
    lines += section("NAME", "kmodd \\- load kernel modules for the devices a machine has")
    lines += [".SH SYNOPSIS",
              f".B kmodd\n[{bold('--config')} {italic('FILE')}] [{bold('--root')} "
              f"{italic('DIR')}] [{bold('--')}{italic('NAME')}{bold('=')}{italic('VALUE')}...]",
              ".br", f".B kmodd\n{bold('--help')} | {bold('--version')}"]
    lines += section(
        "DESCRIPTION",
        "kmodd is a long-running daemon that takes over udev's coldplug and hotplug module "
        "loading. It listens to the kernel's uevents (netlink, group 1, kernel sender only), "
        f"resolves each device's {bold('MODALIAS')} against a memory-resident copy of the "
        "module index with kmod's lookup rules and modprobe.d policy, loads the modules in "
        "dependency order with finit_module, and logs one structured journal record per "
        "outcome.",
        "At start-up it reads its settings and the module index, opens the uevent socket and "
        f"the control socket, tells systemd {bold('READY=1')}, then scans sysfs for the devices "
        "already present (coldplug). When modprobe.d or the module index change, it reloads "
        "(see " + bold("watch_config") + ").",
        "Every setting can be given in " + bold(CONFIG_FILE) + " (see "
        "\\fBkmodd.conf\\fR(5)), on kmodd's command line, and on the kernel command "
        "line. " + PRECEDENCE +
        " A bad value or an unknown name is logged (\"..., ignoring\") and the previous "
        "value stays.",
    )
    lines += [".SH OPTIONS"]
    lines += item(f"{bold('--config')} {italic('FILE')}",
                  f"Read the settings from {italic('FILE')} instead of {bold(CONFIG_FILE)}.")
    lines += item(f"{bold('--root')} {italic('DIR')}",
                  "Move every system path (/sys, /proc, /etc, /run, /lib/modules) under "
                  f"{italic('DIR')}, for tests; ${bold(ROOT_ENV)} does the same.")
    lines += item(f"{bold('-h')}, {bold('--help')}", "Print the options and exit.")
    lines += item(bold("--version"), "Print kmodd's version and exit.")
    lines += [".PP",
              "Each setting is an option, and a parameter on the kernel command line. In "
              "names, - and _ are the same. Values by kind: " +
              "; ".join(f"{italic(METAVARS[k])} is {text[:-1]}" for k, text in VALUE_KINDS) +
              "."]
    for setting in settings:
        lines += daemon_option(setting)
    lines += [".SH SIGNALS"]
    lines += item(bold("SIGHUP"),
                  "Reload: read the module index and modprobe.d again, as "
                  f"{bold('kmodctl reload')} does. The new index replaces the old one only when "
                  "it is whole; otherwise the last good one stays, and the log names the file, "
                  "the offset and what is wrong.")
    lines += item(f"{bold('SIGTERM')}, {bold('SIGINT')}",
                  f"Stop: tell systemd {bold('STOPPING=1')}, close the uevent intake and the "
                  "control socket, and wait for loads in progress at most "
                  f"{bold('stop_timeout')}. Install and remove commands still running then are "
                  "sent SIGTERM, and SIGKILL a second later; the journal names each.")
    lines += section(
        "CONTROL SOCKET",
        f"kmodd answers {bold('kmodctl')}(8) over a Varlink socket, {bold('control_socket')} "
        "(default " + bold(format_default(_setting(settings, "control_socket"))) + "), or the "
        "socket systemd passes (socket activation, names control and kernel). Anyone may ask "
        "for status, devices, modules, why and explain by module or alias name; loading, "
        f"unloading, reloading and explaining a file by path are for root and "
        f"{bold('control_group')}. Unprivileged users are limited in connections and request "
        "rate (the control_* settings).",
        f"One daemon per root: kmodd takes {bold(LOCK_FILE)} before it touches its socket. A "
        "second instance exits at once with status 3 and names the pid that holds the lock. "
        "A stale socket (one nobody listens on) is replaced; at stop, the socket is removed "
        "only if it is still the one this daemon created.",
    )
    lines += section(
        "DEGRADED MODE",
        "When the module index cannot be used at start-up (a missing or damaged "
        "modules.dep.bin, modules.alias.bin, modules.symbols.bin or builtin index), kmodd does "
        "not exit: it keeps listening to uevents and to its socket, loads nothing, and says so "
        f"once at error level in the journal, in {bold('STATUS=')} "
        f"({bold('systemctl status kmodd')}) and in {bold('kmodctl status')} (state degraded "
        "and the reason; the command exits 1). The next successful reload leaves degraded "
        "mode and rescans sysfs, so the devices that arrived meanwhile get their modules.",
    )
    lines += exit_status(exits)
    lines += [".SH ENVIRONMENT"]
    lines += item(bold(ROOT_ENV), f"A root directory, as {bold('--root')}.")
    lines += item(f"{bold('LISTEN_FDS')}, {bold('LISTEN_FDNAMES')}",
                  "Sockets passed by systemd (names control and kernel) are adopted; the "
                  "variables are removed so that install commands do not inherit them.")
    lines += [".SH FILES"]
    lines += item(bold(CONFIG_FILE), "The settings; see \\fBkmodd.conf\\fR(5).")
    lines += item(bold("/lib/modules/") + italic("RELEASE") + bold("/modules.*.bin"),
                  "The module index that depmod writes.")
    lines += item(f"{bold('/etc/modprobe.d/')}, {bold('/lib/modprobe.d/')}",
                  "Module policy: aliases, blacklists, options, install and remove commands.")
    lines += item(bold(str(_setting(settings, "control_socket").default)),
                  "The control socket.")
    lines += item(bold(LOCK_FILE), "The instance lock.")
    lines += item(bold(RECORD_FILE),
                  "The record of this boot's inserts, written before and after each one, so "
                  "that the next instance knows what a killed one loaded. At start kmodd "
                  "re-probes a device left without a driver although its driver module was "
                  "live (once per device).")
    lines += item(bold(POLICY_FILE),
                  "The autoload policy kmodd writes from autoload_deny: one "
                  "\\fBinstall\\fR \\fIALIAS\\fR \\fB/bin/false\\fR line per alias. "
                  "libkmod tries an install command of the exact name before modules.alias, "
                  "so the kernel's request for the alias loads nothing while the module's own "
                  "name still loads; allowed requests are looked up as before.")
    lines += item(bold("/sys/kernel/tracing/instances/kmodd"),
                  "kmodd's own trace instance: the kernel's module_request and module_load "
                  "events, which tell which process made the kernel request a module "
                  "(kernel_requests). Removed at stop.")
    lines += see_also("kmodctl(8)", "kmodd.conf(5)", "modprobe.d(5)", "depmod(8)", "udev(7)",
                      "systemd.socket(5)")
    return Page("kmodd", 8, render(lines))


def _setting(settings: Sequence[Setting], name: str) -> Setting:
    return next(s for s in settings if s.name == name)


# -- kmodctl(8) ---------------------------------------------------------------------------


def option_tag(option: Option) -> str:
    names = ", ".join(bold(n) for n in option.names)
    return names + (f" {italic(option.value)}" if option.value else "")


def command_item(name: str, command: Command) -> list[str]:
    words = command.usage.split(" ", 1)
    tag = bold(words[0]) + (f" {italic(words[1])}" if len(words) > 1 else "")
    body = [prose(command.description)]
    body += [f"{option_tag(o)}: {escape(o.description)}" for o in command.options]
    return item(tag, *body)


def kmodctl_page(commands: Mapping[str, Command], options: Sequence[Option],
                 tools: Mapping[str, Tool], exits: Mapping[int, str]) -> Page:
    """kmodctl(8): the commands, the options, the kmod front ends and the exit codes."""
    tool_names = "|".join(tools)
    lines = header("kmodctl", 8)
    lines += section("NAME", "kmodctl \\- control kmodd, and run kmod-compatible module tools")
    lines += [".SH SYNOPSIS",
              f".B kmodctl\n[{bold('--json')}] [{bold('--socket')} {italic('PATH')}] "
              f"{italic('COMMAND')} [{italic('ARGS')}...]",
              ".br", f".B kmodctl\n{italic('COMMAND')} {bold('--help')}",
              ".br", f".B kmodctl\n{bold(tool_names)} [{italic('ARGS')}...]",
              ".br", f"{bold(tool_names)} [{italic('ARGS')}...]"]
    lines += section(
        "DESCRIPTION",
        "kmodctl asks the running \\fBkmodd\\fR(8) what it did and why, and tells it to load, "
        "unload or reload, over its Varlink control socket. Its output is readable tables; "
        f"with {bold('--json')} it prints the daemon's replies as JSON. When the daemon is not "
        "running, one line says so and kmodctl exits 3; explain then computes the "
        "explanation itself.",
        "kmodctl is also the kmod-compatible module tools, whose options and output are "
        "kmod 30's, byte for byte: run as " + bold("kmodctl modprobe") + " ..., or through "
        "a link to kmodctl named after the tool (" + bold("modprobe") + ", " + bold("modinfo")
        + ", ...).",
    )
    lines += [".SH OPTIONS"]
    for option in options:
        lines += item(option_tag(option), escape(option.description))
    lines += [".SH COMMANDS"]
    for name, command in commands.items():
        lines += command_item(name, command)
    lines += [".SH KMOD-COMPATIBLE TOOLS",
              f"Each runs as {bold('kmodctl')} {italic('TOOL')} [{italic('ARGS')}...], or as a "
              f"link to kmodctl named {italic('TOOL')}, and takes the options of kmod's tool "
              "of the same name."]
    for name, tool in tools.items():
        lines += item(bold(name), f"{escape(sentence(tool.summary)[:-1])}, as "
                                  f"\\fB{name}\\fR(8).")
    lines += exit_status(exits)
    lines += [".PP", "The kmod-compatible tools exit as kmod's tools do."]
    lines += [".SH ENVIRONMENT"]
    lines += item(bold(SOCKET_ENV), f"The control socket, unless {bold('--socket')} names one.")
    lines += item(bold(ROOT_ENV),
                  "A root directory under which every system path is found (tests, chroots).")
    lines += [".SH FILES"]
    lines += item(bold(str(_setting(SETTINGS, "control_socket").default)),
                  "The daemon's control socket.")
    lines += item(bold("/usr/share/bash-completion/completions/kmodctl"),
                  "Bash completion of commands, options and module names.")
    lines += see_also("kmodd(8)", "kmodd.conf(5)", "modprobe(8)", "modinfo(8)", "depmod(8)",
                      "insmod(8)", "rmmod(8)", "lsmod(8)")
    return Page("kmodctl", 8, render(lines))


# -- kmodd.conf(5) ------------------------------------------------------------------------


def kmodd_conf_page(settings: Sequence[Setting]) -> Page:
    """kmodd.conf(5): the file's format and every setting with its default."""
    lines = header("kmodd.conf", 5)
    lines += section("NAME", "kmodd.conf \\- settings of the kmodd daemon")
    lines += section("SYNOPSIS", bold(CONFIG_FILE))
    lines += section(
        "DESCRIPTION",
        "\\fBkmodd\\fR(8) reads its settings from this file at start-up. One "
        f"{italic('name')} {bold('=')} {italic('value')} per line; a line starting with "
        f"{bold('#')} is a comment; blank lines are ignored; - and _ in names are the same; a "
        "value may be wrapped in double quotes; a later line for the same name wins. The file "
        "as installed lists every setting at its default, commented out.",
        PRECEDENCE,
        "Bad input never stops the daemon: an unknown name, a bad value or a malformed line "
        "is logged with the file and line (\"/etc/kmodd.conf:3: ..., ignoring\") and the "
        "previous value stays. A file over 1 MiB, or anything but a regular file, is "
        "reported and not read.",
    )
    lines += [".SH VALUES"]
    for kind, text in VALUE_KINDS:
        lines += item(italic(METAVARS[kind]), escape(sentence(text)))
    lines += [".SH OPTIONS"]
    for setting in settings:
        lines += config_option(setting)
    lines += [".SH EXAMPLE", ".nf", ".RS",
              *(code(t) for t in ("# Log more, and let the admins group load and unload.",
                                  "log_level = debug", "control_group = admins",
                                  "stop_timeout = 20s")),
              ".RE", ".fi"]
    lines += see_also("kmodd(8)", "kmodctl(8)", "modprobe.d(5)")
    return Page("kmodd.conf", 5, render(lines))


def pages() -> tuple[Page, ...]:
    """The three pages, from the tables the code uses."""
    return (
        kmodd_page(SETTINGS, KMODD_EXIT_STATUS),
        kmodctl_page(COMMANDS, GLOBAL_OPTIONS, KMOD_TOOLS, EXIT_STATUS),
        kmodd_conf_page(SETTINGS),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m kmodd.cli.manpages --write DIR`: write the pages into DIR."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--write":
        sys.stderr.write("usage: python3 -m kmodd.cli.manpages --write DIR\n")
        return 2
    os.makedirs(args[1], exist_ok=True)
    for page in pages():
        with open(os.path.join(args[1], page.filename), "w") as f:
            f.write(page.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
