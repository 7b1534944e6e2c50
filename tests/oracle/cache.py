"""On-disk cache of oracle results, so a second test session does not rerun kmod.

The key of a suite's results is a SHA-256 over everything that can change kmod's answers:

* the kmod binary (its bytes and `modprobe --version`) and this runner's own source;
* the suite name and its cases (argv, environment, working directory);
* the fake root's content (every file's bytes, every symlink's target, every directory);
* the suite's extra inputs (the module tree's `modules.*` index files, the quirks tree).

Results live in `$KMODD_TEST_CACHE/oracle/<key>.rec` (default `/var/cache/kmodd-test/oracle`),
zlib-compressed length-prefixed records. `KMODD_ORACLE_CACHE=off` disables the cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence

from .kmodrun import Case, Result, kmod_version
from .suites import Suite

CACHE_DIR = os.path.join(os.environ.get("KMODD_TEST_CACHE", "/var/cache/kmodd-test"), "oracle")
_MAGIC = b"kmodd-oracle-1\n"
_HEADER = struct.Struct(">iII")
_HERE = os.path.dirname(os.path.abspath(__file__))


def enabled() -> bool:
    return os.environ.get("KMODD_ORACLE_CACHE", "on").lower() not in ("off", "0", "no")


@functools.cache
def _file_digest(path: str, size: int, mtime_ns: int) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def path_digest(path: str) -> bytes:
    """Digest of a file, a symlink or a whole directory tree (names, types, contents)."""
    h = hashlib.sha256()

    def one(p: str, rel: str) -> None:
        if os.path.islink(p):
            h.update(b"L" + rel.encode() + b"\0" + os.readlink(p).encode() + b"\0")
        elif os.path.isdir(p):
            h.update(b"D" + rel.encode() + b"\0")
            for name in sorted(os.listdir(p)):
                one(os.path.join(p, name), rel + "/" + name)
        elif os.path.exists(p):
            st = os.stat(p)
            h.update(b"F" + rel.encode() + b"\0" + _file_digest(p, st.st_size, st.st_mtime_ns))
        else:
            h.update(b"-" + rel.encode() + b"\0")

    one(path, "")
    return h.digest()


@functools.lru_cache(maxsize=1)
def _kmod_identity() -> bytes:
    h = hashlib.sha256(kmod_version().encode())
    for tool in ("/usr/sbin/modprobe", "/sbin/modprobe"):
        if os.path.exists(tool):
            h.update(path_digest(os.path.realpath(tool)))
            break
    for src in ("kmodrun.py", "_nsdriver.py"):
        h.update(path_digest(os.path.join(_HERE, src)))
    return h.digest()


def suite_key(suite: Suite) -> str:
    h = hashlib.sha256(_kmod_identity())
    h.update(suite.name.encode() + b"\0")
    for case in suite.cases:
        h.update(repr((case.argv, case.env, case.cwd)).encode() + b"\0")
    h.update(path_digest(suite.root))
    for extra in suite.inputs:
        h.update(extra.encode() + b"\0" + path_digest(extra))
    return h.hexdigest()


def _encode(results: Sequence[Result]) -> bytes:
    parts = [_MAGIC, struct.pack(">I", len(results))]
    for r in results:
        parts += [_HEADER.pack(r.rc, len(r.stdout), len(r.stderr)), r.stdout, r.stderr]
    return zlib.compress(b"".join(parts), 1)


def _decode(blob: bytes) -> list[Result] | None:
    try:
        data = zlib.decompress(blob)
    except zlib.error:
        return None
    if not data.startswith(_MAGIC):
        return None
    pos = len(_MAGIC)
    (count,) = struct.unpack_from(">I", data, pos)
    pos += 4
    out = []
    for _ in range(count):
        rc, nout, nerr = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        out.append(Result(rc, data[pos : pos + nout], data[pos + nout : pos + nout + nerr]))
        pos += nout + nerr
    return out if pos == len(data) else None


def cached_results(suite: Suite, compute: Callable[[Suite], list[Result]]) -> list[Result]:
    """The oracle's results for `suite`, from the cache or computed (and then stored)."""
    if not enabled():
        return compute(suite)
    path = os.path.join(CACHE_DIR, suite_key(suite) + ".rec")
    if os.path.exists(path):
        with open(path, "rb") as f:
            results = _decode(f.read())
        if results is not None and len(results) == len(suite.cases):
            return results
    results = compute(suite)
    os.makedirs(CACHE_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(_encode(results))
    os.replace(tmp, path)
    return results


__all__ = ["Case", "cached_results", "enabled", "path_digest", "suite_key"]
