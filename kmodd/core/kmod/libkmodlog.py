"""kmod's diagnostics, byte for byte: the tools' own messages and libkmod's messages.

kmod prints two kinds of diagnostics, and Debian's kmod 30 prints both in the form its build
gives them (it is built with ENABLE_DEBUG, so libkmod's messages carry a source location):

* A tool's own message (`tools/log.c: log_printf`): `<prog>: <LEVEL>: <text>`, LEVEL one of
  FATAL (LOG_CRIT), ERROR, WARNING, NOTICE, INFO, DEBUG.
* A libkmod message, which takes one of two forms depending on the tool:
  * tools that install their own log function (`log_setup_kmod_log`: rmmod, modprobe):
    `<prog>: <LEVEL>: ../libkmod/<file>:<line> <function>() <text>`;
  * tools that keep libkmod's default (`log_filep`: insmod, lsmod, modinfo):
    `libkmod: <PRIO> ../libkmod/<file>:<line> <function>: <text>`, PRIO one of EMERGENCY,
    ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG.

A libkmod message is printed when its priority is at most the context's (LOG_ERR unless
`KMOD_LOG` or the tool's `-v` raise it). Where libkmod logs, kmodd's system layer produces a
`LibkmodEvent` naming one entry of `LIBKMOD_SITES`; the front end formats it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from kmodd.core.priority import Priority as Priority

#: `tools/log.c: prio_to_str` (a tool's own messages and libkmod's through log_kmod).
TOOL_PRIORITY_NAMES: Mapping[Priority, str] = {
    Priority.CRIT: "FATAL",
    Priority.ERR: "ERROR",
    Priority.WARNING: "WARNING",
    Priority.NOTICE: "NOTICE",
    Priority.INFO: "INFO",
    Priority.DEBUG: "DEBUG",
}

#: `libkmod/libkmod.c: log_filep` under ENABLE_DEBUG.
LIBKMOD_PRIORITY_NAMES: Mapping[Priority, str] = {
    Priority.EMERG: "EMERGENCY",
    Priority.ALERT: "ALERT",
    Priority.CRIT: "CRITICAL",
    Priority.ERR: "ERROR",
    Priority.WARNING: "WARNING",
    Priority.NOTICE: "NOTICE",
    Priority.INFO: "INFO",
    Priority.DEBUG: "DEBUG",
}

#: libkmod's context priority when neither KMOD_LOG nor a tool sets one.
LIBKMOD_DEFAULT_PRIORITY = Priority.ERR

#: The prefix Debian's build records for libkmod's sources (meson/autotools build dir).
LIBKMOD_SOURCE_PREFIX = "../libkmod/"


class Site(NamedTuple):
    """Where in libkmod (kmod 30 as Debian builds it) a message is logged."""

    priority: Priority
    file: str
    line: int
    function: str


#: The libkmod messages kmodd reproduces, keyed by a short name. The line is where the ERR(
#: macro starts in kmod 30 (what __LINE__ gives for a call spread over several lines).
LIBKMOD_SITES: Mapping[str, Site] = {
    "remove_failed": Site(Priority.ERR, "libkmod-module.c", 856, "kmod_module_remove_module"),
    "proc_modules_open": Site(Priority.ERR, "libkmod-module.c", 1725,
                              "kmod_module_new_from_loaded"),
    "loaded_bad_name": Site(Priority.ERR, "libkmod-module.c", 1738,
                            "kmod_module_new_from_loaded"),
    "initstate_read": Site(Priority.ERR, "libkmod-module.c", 1835, "kmod_module_get_initstate"),
    "initstate_unknown": Site(Priority.ERR, "libkmod-module.c", 1847,
                              "kmod_module_get_initstate"),
    "coresize_read": Site(Priority.ERR, "libkmod-module.c", 1886, "kmod_module_get_size"),
    "size_proc_modules_open": Site(Priority.ERR, "libkmod-module.c", 1895,
                                   "kmod_module_get_size"),
    "size_bad_line_name": Site(Priority.ERR, "libkmod-module.c", 1912, "kmod_module_get_size"),
    "size_bad_line_size": Site(Priority.ERR, "libkmod-module.c", 1919, "kmod_module_get_size"),
    "refcnt_read": Site(Priority.ERR, "libkmod-module.c", 1967, "kmod_module_get_refcnt"),
    "holders_open": Site(Priority.ERR, "libkmod-module.c", 1998, "kmod_module_get_holders"),
    # resolution (libkmod-module.c)
    "dep_join": Site(Priority.ERR, "libkmod-module.c", 184, "kmod_module_parse_depline"),
    "dep_path": Site(Priority.ERR, "libkmod-module.c", 191, "kmod_module_parse_depline"),
    "path_conflict": Site(Priority.ERR, "libkmod-module.c", 428, "kmod_module_new_from_path"),
    "no_module_path": Site(Priority.ERR, "libkmod-module.c", 895, "kmod_module_insert_module"),
    "insert_failed": Site(Priority.INFO, "libkmod-module.c", 949, "kmod_module_insert_module"),
    "command_run": Site(Priority.ERR, "libkmod-module.c", 1041, "command_do"),
    "command_status": Site(Priority.ERR, "libkmod-module.c", 1047, "command_do"),
    "softdep_lookup": Site(Priority.ERR, "libkmod-module.c", 1567, "lookup_softdep"),
    # index files (libkmod-index.c)
    "index_magic": Site(Priority.ERR, "libkmod-index.c", 790, "index_mm_open"),
    "index_version": Site(Priority.ERR, "libkmod-index.c", 797, "index_mm_open"),
    # configuration (libkmod-config.c)
    "config_kcmdline": Site(Priority.ERR, "libkmod-config.c", 489, "kcmdline_parse_result"),
    "config_read_kcmdline": Site(Priority.ERR, "libkmod-config.c", 521,
                                 "kmod_config_parse_kcmdline"),
    "config_deprecated": Site(Priority.ERR, "libkmod-config.c", 708, "kmod_config_parse"),
    "config_bad_line": Site(Priority.ERR, "libkmod-config.c", 712, "kmod_config_parse"),
    "config_subdir": Site(Priority.ERR, "libkmod-config.c", 772, "conf_files_filter_out"),
    "config_opendir": Site(Priority.ERR, "libkmod-config.c", 868, "conf_files_list"),
    "config_path_too_long": Site(Priority.ERR, "libkmod-config.c", 936, "kmod_config_new"),
    # kmodd's own: a configuration file that is a FIFO, device, directory or socket, or over
    # the size cap, is not read ("PATH: is a FIFO, ignoring"). kmod logs nothing there (it
    # waits for a FIFO's writer for ever, reads a device without end); the site is its open()
    # of the file (line 942 of kmod 30).
    "config_not_read": Site(Priority.ERR, "libkmod-config.c", 942, "kmod_config_new"),
}


class LibkmodEvent(NamedTuple):
    """One message libkmod would log: which site, and its text (with the trailing newline)."""

    site: str
    text: str

    @property
    def priority(self) -> Priority:
        return LIBKMOD_SITES[self.site].priority


def strerror(errno: int) -> str:
    """The C library's text for an errno (what `%m` and strerror() print)."""
    return os.strerror(errno)


def tool_line(prog: str, priority: Priority, text: str) -> str:
    """A tool's own message: `insmod: ERROR: missing filename.` (text keeps its newline)."""
    return f"{prog}: {TOOL_PRIORITY_NAMES.get(priority, f'LOG-{int(priority):03d}')}: {text}"


def libkmod_line_for_tool(prog: str, event: LibkmodEvent) -> str:
    """A libkmod message through a tool's log function (rmmod, modprobe)."""
    site = LIBKMOD_SITES[event.site]
    level = TOOL_PRIORITY_NAMES.get(site.priority, f"LOG-{int(site.priority):03d}")
    return (f"{prog}: {level}: {LIBKMOD_SOURCE_PREFIX}{site.file}:{site.line} "
            f"{site.function}() {event.text}")


def libkmod_line_default(event: LibkmodEvent) -> str:
    """A libkmod message through libkmod's own default logger (insmod, lsmod, modinfo)."""
    site = LIBKMOD_SITES[event.site]
    level = LIBKMOD_PRIORITY_NAMES.get(site.priority, f"L:{int(site.priority)}")
    return (f"libkmod: {level} {LIBKMOD_SOURCE_PREFIX}{site.file}:{site.line} "
            f"{site.function}: {event.text}")


def _strtol_prefix(text: str) -> int | None:
    """C's strtol(text, &end, 10) when the number is followed by NUL or space, else None."""
    i = 0
    n = len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    start = i
    if i < n and text[i] in "+-":
        i += 1
    digits = i
    while i < n and text[i].isdigit() and text[i].isascii():
        i += 1
    if i == digits:
        # No digits: strtol leaves end at the start; kmod then checks the start character.
        return 0 if (start == n or text[0] in " \t\n\v\f\r") else None
    if i < n and text[i] not in " \t\n\v\f\r":
        return None
    return int(text[start:i])


def libkmod_priority(environ: Mapping[str, str]) -> int:
    """libkmod's context priority: LOG_ERR, or what `KMOD_LOG` says (`libkmod.c: log_priority`)."""
    value = environ.get("KMOD_LOG")
    if value is None:
        return int(LIBKMOD_DEFAULT_PRIORITY)
    number = _strtol_prefix(value)
    if number is not None:
        return number
    for word, priority in (("err", Priority.ERR), ("info", Priority.INFO),
                           ("debug", Priority.DEBUG)):
        if value.startswith(word):
            return int(priority)
    return 0
