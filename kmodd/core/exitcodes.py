"""kmodd's exit codes and what each means: one table for `kmodd.daemon.main` and kmodd(8)."""

from __future__ import annotations

from collections.abc import Mapping

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3

#: Every exit code of the daemon, as kmodd(8) lists them.
EXIT_STATUS: Mapping[int, str] = {
    EXIT_OK: "Stopped as asked (SIGTERM or SIGINT), or --help or --version answered.",
    EXIT_FAILURE: "Cannot start (a socket it needs cannot be opened, or the instance lock "
                  "cannot be taken), or stopped by an internal error, which the log names.",
    EXIT_USAGE: "Reserved for bad usage. An unknown option or a bad value on the command "
                "line does not stop kmodd: it is logged and ignored, so that a typo cannot "
                "keep module loading from starting.",
    EXIT_ALREADY_RUNNING: "Another kmodd runs for the same root: it holds "
                          "/run/kmodd/kmodd.lock, and the message names its pid.",
}
