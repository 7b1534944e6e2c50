"""Diagnostics the way kmod's tools print them.

Two voices, as in kmod:

* the tool's own (`tools/log.c`): `<prog>: <LEVEL>: <message>`, filtered by the tool's
  verbosity; a message at CRIT (printed as FATAL) ends the process with status 1.
* libkmod's default logger, heard only while the library context is being created (config
  parsing happens then, before the tool installs its own logger): Debian builds libkmod
  with debug logging on, so it prints `libkmod: <LEVEL> ../<file>:<line> <function>: ...`,
  filtered by `$KMOD_LOG` (default: errors).

With `-s` both go to syslog instead (facility daemon), as `<LEVEL>: <message>`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import BinaryIO

LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = range(8)

_TOOL_LEVELS = {
    LOG_CRIT: "FATAL",
    LOG_ERR: "ERROR",
    LOG_WARNING: "WARNING",
    LOG_NOTICE: "NOTICE",
    LOG_INFO: "INFO",
    LOG_DEBUG: "DEBUG",
}

_LIB_LEVELS = {
    LOG_EMERG: "EMERGENCY",
    LOG_ALERT: "ALERT",
    LOG_CRIT: "CRITICAL",
    LOG_ERR: "ERROR",
    LOG_WARNING: "WARNING",
    LOG_NOTICE: "NOTICE",
    LOG_INFO: "INFO",
    LOG_DEBUG: "DEBUG",
}


class Exit(Exception):
    """End the tool now with this status (kmod's log_printf exits on CRIT)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def kmod_log_priority(environ: Mapping[str, str]) -> int:
    """libkmod's initial priority (libkmod.c: log_priority) from $KMOD_LOG, else LOG_ERR.

    A leading decimal number wins when only blanks follow it; else `err`, `info`, `debug`
    by prefix; anything else is 0 (only emergencies).
    """
    value = environ.get("KMOD_LOG")
    if value is None:
        return LOG_ERR
    digits = value.lstrip(" \t\n\v\f\r")
    sign = 1
    if digits[:1] in ("+", "-"):
        sign = -1 if digits[0] == "-" else 1
        digits = digits[1:]
    n = len(digits) - len(digits.lstrip("0123456789"))
    rest = digits[n:]
    if n and (rest == "" or rest[0] in " \t\n\v\f\r"):
        return sign * int(digits[:n])
    if not n and (value == "" or value[0] in " \t\n\v\f\r" and not value.strip()):
        return 0
    if value.startswith("err"):
        return LOG_ERR
    if value.startswith("info"):
        return LOG_INFO
    if value.startswith("debug"):
        return LOG_DEBUG
    return 0


def _prio_name(table: dict[int, str], prio: int, fmt: str) -> str:
    return table.get(prio, fmt % prio)


class ToolLog:
    """One tool's logging state."""

    def __init__(
        self,
        prog: str,
        stderr: BinaryIO,
        environ: Mapping[str, str],
        syslog: Callable[[int, str], None] | None = None,
    ) -> None:
        self.prog = os.path.basename(prog)
        self.stderr = stderr
        self.filter = LOG_WARNING  # log.c's initial priority
        self.lib_filter = kmod_log_priority(environ)
        self.use_syslog = False
        self._syslog = syslog

    def write(self, text: str) -> None:
        self.stderr.write(text.encode("latin-1", "replace"))

    def tool(self, prio: int, message: str) -> None:
        """log_printf: `message` must end with a newline, as kmod's format strings do."""
        if prio > self.filter:
            return
        name = _prio_name(_TOOL_LEVELS, prio, "LOG-%03d")
        if self.use_syslog and self._syslog is not None:
            self._syslog(prio, f"{name}: {message}")
        else:
            self.write(f"{self.prog}: {name}: {message}")
        if prio <= LOG_CRIT:
            self.stderr.flush()
            raise Exit(1)

    def library_default(self, prio: int, where: tuple[str, int, str], message: str) -> None:
        """libkmod's own logger, used while the context is created (config parsing)."""
        if prio > self.lib_filter:
            return
        name = _prio_name(_LIB_LEVELS, prio, "L:%d")
        file, line, fn = where
        self.write(f"libkmod: {name} ../{file}:{line} {fn}: {message}\n")

    def library(self, prio: int, message: str, where: tuple[str, int, str]) -> None:
        """libkmod messages once the tool has installed its logger (tools/log.c: log_kmod).

        Debian's tools are built with debug logging too, so the source location shows.
        """
        if prio > self.lib_filter:
            return
        name = _prio_name(_TOOL_LEVELS, prio, "LOG-%03d")
        file, line, fn = where
        if self.use_syslog and self._syslog is not None:
            self._syslog(prio, f"{name}: ../{file}:{line} {fn}() {message}\n")
        else:
            self.write(f"{self.prog}: {name}: ../{file}:{line} {fn}() {message}\n")

    def setup(self, priority: int) -> None:
        """log_setup_kmod_log: the tool's verbosity now filters both voices."""
        self.filter = priority
        self.lib_filter = priority
