"""`kmodd`: the daemon's entry point. Settings in, the event loop run, an exit code out.

Settings come from one table (`core.settings`) and four sources, later ones winning:
defaults < `/etc/kmodd.conf` (or `--config FILE`) < the command line < `kmodd.NAME=VALUE` on
the kernel command line. Every bad value is logged ("..., ignoring") and the daemon goes on.
`--root DIR` moves every system path under DIR (tests); without it the real paths are used:
/sys, /proc, /etc, /run/kmodd/io.kmodd and /lib/modules/`uname -r`.

Logging goes to the journal when its socket exists (`log_target = auto`), else to stderr
as `<N>message` lines. Sockets passed by systemd (`LISTEN_FDS`, names `control` and
`kernel`) are adopted; the variables are removed so install commands do not inherit them.

Exit codes: `core.exitcodes.EXIT_STATUS` (0 stopped as asked; 1 cannot start or stopped by an
internal error; 2 reserved for bad usage; 3 another kmodd runs for the same root).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from kmodd import __version__
from kmodd.core.autoload.messages import MESSAGE_IDS, Message

# Exit codes (only main() turns failures into them), from the table kmodd(8) lists.
from kmodd.core.exitcodes import (
    EXIT_ALREADY_RUNNING,
    EXIT_FAILURE,
    EXIT_OK,
)
from kmodd.core.settings import (
    CONFIG_FILE,
    Diagnostic,
    SourceValues,
    parse_argv,
    parse_config,
    parse_kernel_cmdline,
    resolve,
    usage,
)
from kmodd.daemon.service import (
    PRIVATE_VARIABLES,
    Daemon,
    DaemonSetup,
    InstanceRunning,
    StartupError,
)
from kmodd.system.journal import LogSink, LogTarget, Priority, open_log
from kmodd.system.kernel import KernelPort
from kmodd.system.moddb import read_cmdline, read_config_file
from kmodd.system.notify import listen_fds
from kmodd.system.root import Root
from kmodd.system.safeopen import Refusal, Refused

#: Environment variable that moves the root like `--root` (the same one kmodctl reads).
ROOT_ENV = "KMODD_ROOT"


def process_started() -> float:
    """When this process started, on the `time.monotonic()` clock (interpreter start-up and
    imports included, so that "Ready after" means what systemd sees); now if unknown."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read().decode()
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - max(age, 0.0)


def read_settings_sources(root: Root, config_file: str | None
                          ) -> tuple[SourceValues | None, SourceValues, str]:
    """The config file's values (None when the default file is absent) and the kernel
    command line's, and the config file's name as messages show it.

    The file is read through `safeopen`'s checks: a directory, FIFO, device or socket at its
    path, or a file over the cap, is reported ("/etc/kmodd.conf: is a directory, ignoring")
    and the defaults stay; only a missing default file is normal and silent."""
    shown = config_file or CONFIG_FILE
    path = config_file or root.path(CONFIG_FILE)
    data = read_config_file(path, shown)
    config: SourceValues | None
    if isinstance(data, Refused):
        if data.missing and config_file is None:
            config = None
        else:
            # "is a directory" (a file that is not read), or "cannot be read: <strerror>";
            # Diagnostic.text adds ", ignoring".
            why = data.reason if data.refusal in (Refusal.NOT_REGULAR, Refusal.TOO_LARGE) \
                else f"cannot be read: {data.reason}"
            config = SourceValues({}, (Diagnostic(shown, None, why),))
    else:
        config = parse_config(data.decode(errors="replace"), shown)
    cmdline = read_cmdline(root) or b""
    return config, parse_kernel_cmdline(cmdline.decode(errors="replace")), shown


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None,
         kernel: KernelPort | None = None, stderr: BinaryIO | None = None) -> int:
    """Run the daemon until it is stopped; the exit code. `kernel`: a simulated one (tests)."""
    argv = list(sys.argv if argv is None else argv)
    env = dict(os.environ if environ is None else environ)
    started = process_started()
    out = stderr if stderr is not None else sys.stderr.buffer
    args = parse_argv(argv)
    if args.show_help:
        sys.stdout.write(usage())
        return EXIT_OK
    if args.show_version:
        sys.stdout.write(f"kmodd {__version__}\n")
        return EXIT_OK
    root = Root(args.root or env.get(ROOT_ENV) or "/")
    config, kernel_values, shown = read_settings_sources(root, args.config_file)
    resolved = resolve(config=config, argv=args.settings, kernel=kernel_values,
                       config_name=shown)
    settings = resolved.settings
    sink: LogSink = open_log(root, LogTarget(settings.log_target), out)
    for diagnostic in resolved.diagnostics:
        sink.log(Priority.WARNING, diagnostic.text,
                 MESSAGE_ID=MESSAGE_IDS[Message.CONFIG_IGNORED])
    listen = listen_fds(env)
    for name in PRIVATE_VARIABLES:
        os.environ.pop(name, None)
    setup = DaemonSetup(settings=settings, root=root, environ=env, listen=listen,
                        started=started)
    daemon = Daemon(setup, sink, kernel=kernel)
    try:
        asyncio.run(daemon.run())
    except InstanceRunning as e:
        sink.log(Priority.ERR, f"Cannot start: {e}",
                 MESSAGE_ID=MESSAGE_IDS[Message.START_FAILED])
        return EXIT_ALREADY_RUNNING
    except StartupError as e:
        sink.log(Priority.ERR, f"Cannot start: {e}",
                 MESSAGE_ID=MESSAGE_IDS[Message.START_FAILED])
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as e:  # a bug: say it in one record; the service manager restarts us
        causes = e.exceptions if isinstance(e, BaseExceptionGroup) else (e,)
        for cause in causes:
            sink.log(Priority.CRIT, f"Stopped by an internal error: {type(cause).__name__}: "
                                    f"{cause}", MESSAGE_ID=MESSAGE_IDS[Message.INTERNAL_ERROR])
        return EXIT_FAILURE
    if daemon.abandoned_loads:
        # Threads blocked in finit_module would hold the interpreter's exit forever.
        out.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
