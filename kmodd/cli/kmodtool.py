"""What every kmod-compatible front end shares: version text and kmod's two log paths.

`ToolLog` is `tools/log.c`: a tool's own messages (`<prog>: ERROR: ...`), filtered by the
tool's priority, to stderr or (rmmod -s, modprobe -s) to syslog; and libkmod's messages
routed through the tool (`log_setup_kmod_log`). `LibkmodDefaultLog` is libkmod's own
stderr logger, used by the tools that never install one (insmod, lsmod, modinfo).
"""

from __future__ import annotations

import functools
import syslog
from collections.abc import Callable, Mapping
from typing import BinaryIO, ParamSpec, cast

from kmodd.core.kmod.binindex import IndexFileError
from kmodd.core.kmod.libkmodlog import (
    TOOL_PRIORITY_NAMES,
    LibkmodEvent,
    Priority,
    libkmod_line_default,
    libkmod_line_for_tool,
    libkmod_priority,
    tool_line,
)

#: `--version` output of Debian 12's kmod 30 (`puts(PACKAGE " version " VERSION)`, features).
VERSION_TEXT = b"kmod version 30\n+ZSTD +XZ -ZLIB +LIBCRYPTO -EXPERIMENTAL\n"

#: tools/log.c's default priority before a tool sets one.
TOOL_DEFAULT_PRIORITY = Priority.WARNING

EXIT_SUCCESS = 0
EXIT_FAILURE = 1


def latin1(text: str) -> bytes:
    """Text kmodd read byte-for-byte (Latin-1) back to its bytes."""
    return text.encode("latin-1", "replace")


def fs_bytes(text: str) -> bytes:
    """An argv string back to the bytes the user typed."""
    return text.encode("utf-8", "surrogateescape")


Encode = Callable[[str], bytes]


class ToolLog:
    """A kmod tool's log: `log_printf` and, once set up, libkmod's messages too.

    `encode` turns text back into the bytes it stands for: `fs_bytes` for text that came
    from argv as Python decodes it, `latin1` for a tool that keeps every byte as one
    character (modprobe, whose text also comes from config files).
    """

    def __init__(self, prog: str, stderr: BinaryIO, *,
                 priority: int = int(TOOL_DEFAULT_PRIORITY), encode: Encode = fs_bytes) -> None:
        self.prog = prog
        self.stderr = stderr
        self.priority = priority
        self.use_syslog = False
        self.encode = encode

    def open_syslog(self) -> None:
        """`log_open(true)`: later messages go to syslog (facility daemon)."""
        syslog.openlog(self.prog, syslog.LOG_CONS, syslog.LOG_DAEMON)
        self.use_syslog = True

    def close(self) -> None:
        if self.use_syslog:
            syslog.closelog()

    def _emit(self, priority: int, line: str, syslog_text: str) -> None:
        if self.use_syslog:
            syslog.syslog(priority, syslog_text)
        else:
            self.stderr.write(self.encode(line))

    def log(self, priority: Priority, text: str) -> None:
        """A tool's own message (`log_printf`); `text` keeps its newline."""
        if priority > self.priority:
            return
        name = TOOL_PRIORITY_NAMES.get(priority, f"LOG-{int(priority):03d}")
        self._emit(priority, tool_line(self.prog, priority, text), f"{name}: {text}")

    def err(self, text: str) -> None:
        self.log(Priority.ERR, text)

    def libkmod(self, event: LibkmodEvent) -> None:
        """A libkmod message through this tool's log function (`log_kmod`)."""
        if event.priority > self.priority:
            return
        line = libkmod_line_for_tool(self.prog, event)
        self._emit(event.priority, line, line.split(": ", 1)[1])

    def raw(self, text: str) -> None:
        """Bytes a tool writes straight to stderr (fprintf(stderr, ...)), syslog or not."""
        self.stderr.write(self.encode(text))


class LibkmodDefaultLog:
    """libkmod's own logger (`log_filep` to stderr), filtered by `KMOD_LOG`."""

    def __init__(self, stderr: BinaryIO, environ: Mapping[str, str], *,
                 encode: Encode = fs_bytes) -> None:
        self.stderr = stderr
        self.priority = libkmod_priority(environ)
        self.encode = encode

    def __call__(self, event: LibkmodEvent) -> None:
        if event.priority > self.priority:
            return
        self.stderr.write(self.encode(libkmod_line_default(event)))


_P = ParamSpec("_P")
#: kmod's tools exit 1 on an error (modprobe, modinfo, rmmod, insmod, depmod alike).
EXIT_INDEX_DAMAGED = 1


def reports_index_damage(tool: str) -> Callable[[Callable[_P, int]], Callable[_P, int]]:
    """Wrap a front end's `run`: a damaged index file, met wherever a lookup reaches the
    damage, ends the tool with one kmod-style line naming the file, the offset and what is
    wrong (`modprobe: ERROR: PATH: offset 0x..: ...`) and exit status 1, not a traceback."""

    def wrap(run: Callable[_P, int]) -> Callable[_P, int]:
        @functools.wraps(run)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> int:
            try:
                return run(*args, **kwargs)
            except IndexFileError as e:
                stderr = cast(BinaryIO, kwargs["stderr"])
                stderr.write(f"{tool}: ERROR: {e}\n".encode("utf-8", "surrogateescape"))
                stderr.flush()
                return EXIT_INDEX_DAMAGED
        return checked
    return wrap
