"""What the kernel says about loaded modules: `/proc/modules` and `/sys/module/<name>/*`.

Every reader follows libkmod 30 (`libkmod-module.c`) to the byte, because lsmod, rmmod and
modprobe decide on these values:

* `initstate`: `live\\n`, `coming\\n`, `going\\n`; other text is an error; a missing file in an
  existing directory means COMING (the kernel creates the directory first); no directory
  means not loaded. BUILTIN is decided by the caller from `modules.builtin.bin`.
* `refcnt`, `coresize`: a decimal number that must be followed by whitespace
  (`read_str_long`), so a value without its newline is an error, as in libkmod.
* `holders/`: directory entries in readdir order.
* size: `coresize`, or else the second field of the module's `/proc/modules` line.

Where libkmod would log an error, the reader hands a `LibkmodEvent` to its `log` callback, so
a front end can print exactly what kmod prints.
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kmodd.core.kmod.initstate import InitState
from kmodd.core.kmod.libkmodlog import LibkmodEvent, strerror
from kmodd.core.kmod.normalize import modname_normalize
from kmodd.system.root import Root

if TYPE_CHECKING:
    from kmodd.core.modfile.taint import Taint, TaintError

#: libkmod reads small sysfs values into a 32-byte buffer (31 bytes of text).
SYSFS_VALUE_MAX = 31
#: fgets() buffer libkmod reads /proc/modules with.
PROC_MODULES_LINE_MAX = 4096
#: The kernel's decompressor name, when it can decompress modules itself (Linux >= 6.4).
KERNEL_COMPRESSION_FILE = "/sys/module/compression"

LogFn = Callable[[LibkmodEvent], None]


def _no_log(event: LibkmodEvent) -> None:
    """Drop libkmod-style messages (the daemon does not print them)."""


_INITSTATE_TEXT = {b"live\n": InitState.LIVE, b"coming\n": InitState.COMING,
                   b"going\n": InitState.GOING}


@dataclass(frozen=True, slots=True)
class ProcModule:
    """One line of /proc/modules (`name size refcnt users state address [taints]`)."""

    name: str
    size: int
    refcount: int | None  # None: "-" (kernel without module unloading)
    users: tuple[str, ...]
    permanent: bool
    state: str  # Live, Loading, Unloading
    address: str
    taints: str  # e.g. "(OE)" or ""


@dataclass(frozen=True, slots=True)
class ProcModulesError:
    """A /proc/modules line that does not have the kernel's format."""

    lineno: int
    line: str
    reason: str

    def __str__(self) -> str:
        return f"/proc/modules:{self.lineno}: {self.reason}: {self.line!r}"


def parse_proc_modules_line(line: str, lineno: int) -> ProcModule | ProcModulesError:
    """Parse one line the kernel's `m_show` wrote."""
    fields = line.split()
    if len(fields) < 6:
        return ProcModulesError(lineno, line, "fewer than 6 fields")
    name, size, refcnt, users, state, address = fields[:6]
    if not size.isdigit():
        return ProcModulesError(lineno, line, "size is not a number")
    refcount: int | None
    if refcnt == "-":
        refcount = None
    else:
        try:
            refcount = int(refcnt)
        except ValueError:
            return ProcModulesError(lineno, line, "use count is not a number")
    used_by = tuple(u for u in users.split(",") if u and u != "-")
    permanent = "[permanent]" in used_by
    used_by = tuple(u for u in used_by if u != "[permanent]")
    taints = " ".join(fields[6:])
    return ProcModule(name, int(size), refcount, used_by, permanent, state, address, taints)


def parse_proc_modules(text: str) -> list[ProcModule | ProcModulesError]:
    """Parse all of /proc/modules."""
    return [parse_proc_modules_line(line, n)
            for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_small(path: str) -> bytes | int:
    """Up to 31 bytes of a sysfs file, or the errno of opening/reading it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        return err.errno or E.EIO
    try:
        chunks = b""
        while len(chunks) < SYSFS_VALUE_MAX:
            piece = os.read(fd, SYSFS_VALUE_MAX - len(chunks))
            if not piece:
                break
            chunks += piece
        return chunks
    except OSError as err:
        return err.errno or E.EIO
    finally:
        os.close(fd)


def _strtol_then_space(raw: bytes) -> int | None:
    """kmod's read_str_long check: a base-10 number followed by a whitespace character."""
    text = raw.split(b"\0", 1)[0].decode("latin-1")
    i = 0
    n = len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    start = i
    if i < n and text[i] in "+-":
        i += 1
    digits = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i == digits or i >= n or text[i] not in " \t\n\v\f\r":
        return None
    return int(text[start:i])


def _strtol_whole(token: str) -> int | None:
    """C's strtol(token, &end, 10) when it consumes the whole token, else None."""
    body = token.lstrip(" \t\n\v\f\r")
    sign = body[:1] if body[:1] in ("+", "-") else ""
    digits = body[len(sign):]
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    return int(sign + digits)


class SysModules:
    """Reads module state from a `Root`'s /proc and /sys like libkmod does."""

    def __init__(self, root: Root, log: LogFn = _no_log) -> None:
        self.root = root
        self.log = log

    # --- /proc/modules -----------------------------------------------------------------

    def proc_modules_text(self) -> str | int:
        """The whole of /proc/modules, or the errno of reading it."""
        try:
            with open(self.root.proc("modules"), "rb") as f:
                return f.read().decode("latin-1")
        except OSError as err:
            return err.errno or E.EIO

    def loaded_names(self) -> list[str] | int:
        """Module names in /proc/modules order, as `kmod_module_new_from_loaded` lists them.

        Returns the errno when /proc/modules cannot be opened (after logging libkmod's error).
        """
        text = self.proc_modules_text()
        if isinstance(text, int):
            self.log(LibkmodEvent("proc_modules_open",
                                  f"could not open /proc/modules: {strerror(text)}\n"))
            return text
        names: list[str] = []
        lines = text.split("\n")
        for index, body in enumerate(lines):
            last = index == len(lines) - 1
            if last and not body:
                break
            # fgets() keeps the newline (at most 4095 bytes a call; the rest of a longer line
            # is skipped) and strtok() splits on blanks only.
            raw = (body + ("" if last else "\n"))[:PROC_MODULES_LINE_MAX - 1]
            first = next((t for t in raw.replace("\t", " ").split(" ") if t), None)
            if first is None:
                self.log(LibkmodEvent(
                    "loaded_bad_name",
                    f"could not get module from name '(null)': {strerror(E.ENOENT)}\n"))
                continue
            names.append(modname_normalize(first))
        return names

    # --- /sys/module/<name> ------------------------------------------------------------

    def initstate(self, name: str) -> InitState | None:
        """LIVE, COMING or GOING from sysfs; None when the module is not loaded (or unreadable)."""
        path = self.root.sys_module(name, "initstate")
        raw = _read_small(path)
        if isinstance(raw, int):
            if os.path.isdir(self.root.sys_module(name)):
                return InitState.COMING
            return None
        state = _INITSTATE_TEXT.get(raw.split(b"\0", 1)[0])
        if state is None:
            shown = raw.split(b"\0", 1)[0].decode("latin-1")
            self.log(LibkmodEvent("initstate_unknown",
                                  f"unknown /sys/module/{name}/initstate: '{shown}'\n"))
        return state

    def exists(self, name: str) -> bool:
        """True when /sys/module/<name> is there (a loaded module, or a built-in with params)."""
        return os.path.isdir(self.root.sys_module(name))

    def refcnt(self, name: str) -> int:
        """The use count, or minus the errno (libkmod's `kmod_module_get_refcnt` contract)."""
        raw = _read_small(self.root.sys_module(name, "refcnt"))
        if isinstance(raw, int):
            return -raw
        value = _strtol_then_space(raw)
        if value is None:
            self.log(LibkmodEvent(
                "refcnt_read",
                f"could not read integer from '/sys/module/{name}/refcnt': "
                f"'{strerror(E.EINVAL)}'\n"))
            return -E.EINVAL
        return value

    def size(self, name: str) -> int:
        """`coresize`, else the /proc/modules size, else minus an errno (kmod_module_get_size)."""
        moddir = self.root.sys_module(name)
        try:
            dfd = os.open(moddir, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            return -(err.errno or E.EIO)
        os.close(dfd)
        coresize = _read_small(os.path.join(moddir, "coresize"))
        if not isinstance(coresize, int):
            value = _strtol_then_space(coresize)
            if value is None:
                self.log(LibkmodEvent("coresize_read",
                                      f"failed to read coresize from /sys/module/{name}\n"))
                return -E.ENOENT
            return value
        text = self.proc_modules_text()
        if isinstance(text, int):
            self.log(LibkmodEvent("size_proc_modules_open",
                                  f"could not open /proc/modules: {strerror(text)}\n"))
            return -text
        lines = text.split("\n")
        for lineno, body in enumerate(lines, 1):
            if lineno == len(lines) and not body:
                break
            # fgets() keeps the newline and strtok() splits on blanks only, so the newline
            # sticks to the last token of the line.
            line = body + ("\n" if lineno < len(lines) else "")
            tokens = [t for t in line.replace("\t", " ").split(" ") if t]
            if not tokens or tokens[0] != name:
                continue
            if len(tokens) < 2:
                self.log(LibkmodEvent("size_bad_line_name",
                                      f"invalid line format at /proc/modules:{lineno}\n"))
                return -E.ENOENT
            value = _strtol_whole(tokens[1])
            if value is None:
                self.log(LibkmodEvent("size_bad_line_size",
                                      f"invalid line format at /proc/modules:{lineno}\n"))
                return -E.ENOENT
            return value
        return -E.ENOENT

    def holders(self, name: str) -> list[str] | None:
        """Names in /sys/module/<name>/holders (readdir order); None if it cannot be read."""
        path = self.root.sys_module(name, "holders")
        try:
            entries = os.listdir(path)
        except OSError as err:
            self.log(LibkmodEvent(
                "holders_open",
                f"could not open '/sys/module/{name}/holders': {strerror(err.errno or E.EIO)}\n"))
            return None
        return [modname_normalize(entry) for entry in entries]

    def parameters(self, name: str) -> dict[str, str]:
        """The readable files of /sys/module/<name>/parameters, newline stripped."""
        path = self.root.sys_module(name, "parameters")
        values: dict[str, str] = {}
        try:
            entries = sorted(os.listdir(path))
        except OSError:
            return values
        for entry in entries:
            try:
                with open(os.path.join(path, entry), "rb") as f:
                    values[entry] = f.read().decode("latin-1").removesuffix("\n")
            except OSError:
                continue
        return values

    def taint(self, name: str) -> Taint | TaintError | None:
        """The module's own taint flags (`/sys/module/<name>/taint`); None if absent."""
        path = self.root.sys_module(name, "taint")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("latin-1")
        except OSError:
            return None
        from kmodd.core.modfile.taint import parse_module_taint  # lsmod, explain: not READY's path

        return parse_module_taint(text, path)

    # --- kernel-wide -------------------------------------------------------------------

    def tainted(self) -> Taint | TaintError | None:
        """The kernel's taint mask from /proc/sys/kernel/tainted; None if absent."""
        path = self.root.proc("sys/kernel/tainted")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("latin-1")
        except OSError:
            return None
        from kmodd.core.modfile.taint import parse_tainted

        return parse_tainted(text, path)

    def kernel_compression(self) -> str | None:
        """The kernel's in-kernel module decompressor (`zstd`, `xz`, `gzip`), if it has one."""
        try:
            with open(self.root.path(KERNEL_COMPRESSION_FILE), "rb") as f:
                text = f.read().decode("latin-1").strip()
        except OSError:
            return None
        return text or None
