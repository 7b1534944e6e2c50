"""The `kmodd` command: the daemon's process starts here, without OpenSSL.

kmodd never speaks TLS, yet asyncio imports `ssl` whenever it can, which maps libssl and
libcrypto into the process (about 4 MiB resident). Marking `ssl` unavailable before
anything imports asyncio makes asyncio run as on a Python built without TLS support; then
`kmodd.daemon.main` runs. (Tests import `kmodd.daemon.main` directly and keep `ssl`.)
"""

from __future__ import annotations

import sys


def main() -> int:
    """Start the daemon with `ssl` kept out (unless something imported it already)."""
    if "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]
    # Imported after: nothing the daemon imports may pull ssl in (bench/bench_daemon.py, READY).
    from kmodd.daemon.main import main as run_daemon

    return run_daemon()


if __name__ == "__main__":
    sys.exit(main())
