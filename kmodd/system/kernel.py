"""The kernel's module syscalls: finit_module, init_module, delete_module, through ctypes.

`KernelPort` is the edge every loader talks to; `LinuxKernel` is the real one and
`tests/fakes.py: FakeKernel` a simulated one. Results are values: an errno (0 for success)
and what was tried, never an exception.

Insertion follows libkmod (`kmod_module_insert_module`, `kmod_file_open`):

1. open the file `O_RDONLY|O_CLOEXEC` and read its first 6 bytes; fewer is EINVAL;
2. detect the compression from the magic bytes, never from the name;
3. uncompressed, or compressed with the kernel's own decompressor (`/sys/module/compression`):
   `finit_module(fd, options, flags)`, with `MODULE_INIT_COMPRESSED_FILE` when compressed and
   the force flags as `IGNORE_VERMAGIC` / `IGNORE_MODVERSIONS`;
4. only if that gives ENOSYS (no finit_module, or the compression does not match, which
   libkmod signals with a faked ENOSYS): read the file, decompress it in user space, strip
   `__versions` and/or the `vermagic=` string for the force flags, and `init_module`.

Removal is `delete_module(name, O_NONBLOCK | (O_TRUNC if force))`; kmod always sets
O_NONBLOCK.

Step 3 for compressed files is kmod 31's; kmod 30 always decompressed in user space. On a
kernel without in-kernel decompression (Debian 12's 6.1 has no /sys/module/compression) the
two do the same. Unlike Debian's kmod 30 (built without zlib), gzip is decompressed too.
"""

from __future__ import annotations

import ctypes
import errno as E
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntFlag
from typing import Protocol

from kmodd.core.modfile import compression
from kmodd.system.codecs import unzstd
from kmodd.system.modstate import SysModules
from kmodd.system.root import Root


class InsertFlag(IntFlag):
    """`MODULE_INIT_*` flags of finit_module (include/uapi/linux/module.h)."""

    IGNORE_MODVERSIONS = 1
    IGNORE_VERMAGIC = 2
    COMPRESSED_FILE = 4


_IGNORE_MODVERSIONS = int(InsertFlag.IGNORE_MODVERSIONS)
_IGNORE_VERMAGIC = int(InsertFlag.IGNORE_VERMAGIC)
_COMPRESSED_FILE = int(InsertFlag.COMPRESSED_FILE)


@dataclass(frozen=True, slots=True)
class SyscallNumbers:
    init_module: int
    delete_module: int
    finit_module: int


#: Syscall numbers per architecture (`uname -m`), from each arch's unistd table.
SYSCALL_NUMBERS: Mapping[str, SyscallNumbers] = {
    "x86_64": SyscallNumbers(175, 176, 313),
    "i386": SyscallNumbers(128, 129, 350),
    "i686": SyscallNumbers(128, 129, 350),
    "aarch64": SyscallNumbers(105, 106, 273),
    "riscv64": SyscallNumbers(105, 106, 273),
    "loongarch64": SyscallNumbers(105, 106, 273),
    "armv7l": SyscallNumbers(128, 129, 379),
    "armv6l": SyscallNumbers(128, 129, 379),
    "ppc64le": SyscallNumbers(128, 129, 353),
    "ppc64": SyscallNumbers(128, 129, 353),
    "s390x": SyscallNumbers(128, 129, 344),
}

#: libkmod reads this many bytes to detect the compression; a shorter file is EINVAL.
MAGIC_READ_SIZE = compression.MAGIC_PROBE_SIZE

#: libkmod's delete_module flags: KMOD_REMOVE_NOWAIT is O_NONBLOCK, KMOD_REMOVE_FORCE O_TRUNC.
REMOVE_NOWAIT = os.O_NONBLOCK
REMOVE_FORCE = os.O_TRUNC


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What an insert came to: errno 0 is success; `syscall` says which step gave it."""

    errno: int
    syscall: str  # "open", "read", "finit_module", "decompress", "init_module"
    flags: int = 0  # the flags handed to finit_module
    compression: str | None = None
    notes: tuple[str, ...] = ()  # what was done on the way (stripping, fallbacks)

    @property
    def ok(self) -> bool:
        return self.errno == 0


def init_declined(modules: SysModules, name: str, result: InsertResult) -> bool:
    """Did module `name`'s own init answer EEXIST? (see core.autoload.outcome.DECLINED_EXPLANATION)

    The kernel's EEXIST for a module that is there leaves it loaded; an init that answers
    EEXIST (a cpufreq driver when another one is in charge) leaves nothing of the name.
    """
    return (result.syscall in ("finit_module", "init_module") and result.errno == E.EEXIST
            and modules.initstate(name) is None)


class KernelPort(Protocol):
    """Insert and remove modules, and read their state."""

    @property
    def modules(self) -> SysModules: ...

    def insert(self, path: str, options: str | bytes = "", *, force_vermagic: bool = False,
               force_modversion: bool = False) -> InsertResult: ...

    def delete(self, name: str, *, force: bool = False) -> int: ...


class Syscalls(Protocol):
    """The three raw syscalls; each returns 0 or a positive errno."""

    def finit_module(self, fd: int, params: bytes, flags: int) -> int: ...

    def init_module(self, image: bytes, params: bytes) -> int: ...

    def delete_module(self, name: bytes, flags: int) -> int: ...


class Codec(Protocol):
    """User-space decompression for the init_module path (kmodd.core.modfile.compression)."""

    def decompress(self, kind: str, data: bytes) -> bytes | str: ...


class Stripper(Protocol):
    """ELF edits kmod makes for the force flags on the init_module path (kmodd.core.modfile.elf)."""

    def strip_section(self, image: bytes, section: str) -> bytes | str: ...

    def strip_vermagic(self, image: bytes) -> bytes | str: ...


def machine() -> str:
    """The architecture name used to pick syscall numbers (32-bit userland counts as 32-bit)."""
    name = os.uname().machine
    if name == "x86_64" and ctypes.sizeof(ctypes.c_void_p) == 4:
        return "i386"
    return name


class LibcSyscalls:
    """The syscalls through libc's `syscall(2)`."""

    def __init__(self, numbers: SyscallNumbers | None = None) -> None:
        if numbers is None:
            arch = machine()
            numbers = SYSCALL_NUMBERS.get(arch)
            if numbers is None:
                raise RuntimeError(f"no module syscall numbers known for {arch}")
        self.numbers = numbers
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = self._libc.syscall
        self._syscall.restype = ctypes.c_long

    def _result(self, ret: int) -> int:
        return 0 if ret == 0 else (ctypes.get_errno() or E.EIO)

    def finit_module(self, fd: int, params: bytes, flags: int) -> int:
        ctypes.set_errno(0)
        return self._result(self._syscall(ctypes.c_long(self.numbers.finit_module),
                                          ctypes.c_int(fd), ctypes.c_char_p(params),
                                          ctypes.c_int(flags)))

    def init_module(self, image: bytes, params: bytes) -> int:
        ctypes.set_errno(0)
        return self._result(self._syscall(ctypes.c_long(self.numbers.init_module),
                                          ctypes.c_char_p(image), ctypes.c_ulong(len(image)),
                                          ctypes.c_char_p(params)))

    def delete_module(self, name: bytes, flags: int) -> int:
        ctypes.set_errno(0)
        return self._result(self._syscall(ctypes.c_long(self.numbers.delete_module),
                                          ctypes.c_char_p(name), ctypes.c_uint(flags)))


def detect_compression(head: bytes) -> str | None:
    """The compression a file's first bytes announce (`zstd`, `xz`, `gzip`), or None."""
    kind = compression.detect(head)
    return None if kind is compression.Compression.NONE else str(kind)


class _CoreCodec:
    """User-space decompression through kmodd.core.modfile.compression."""

    def decompress(self, kind: str, data: bytes) -> bytes | str:
        try:
            plain = bytes(compression.decompress(data, unzstd))
        except compression.DecompressError as err:
            message: str = err.message
            return message
        return plain


class _CoreStripper:
    """kmod's force-flag edits through kmodd.core.modfile.elf, imported on first use: only a
    forced load needs the ELF reader (bench/bench_daemon.py's READY, bench_oneshot.py)."""

    def strip_section(self, image: bytes, section: str) -> bytes | str:
        from kmodd.core.modfile import elf

        try:
            out: bytes = elf.strip_section(image, section)
        except elf.ElfError as err:
            return os.strerror(err.errno)
        return out

    def strip_vermagic(self, image: bytes) -> bytes | str:
        from kmodd.core.modfile import elf

        try:
            out: bytes = elf.strip_vermagic(image)
        except elf.ElfError as err:
            return os.strerror(err.errno)
        return out


def _encode(options: str | bytes) -> bytes:
    return options if isinstance(options, bytes) else os.fsencode(options)


class LinuxKernel:
    """The running kernel, through `Syscalls` (libc by default)."""

    def __init__(self, root: Root, syscalls: Syscalls | None = None, codec: Codec | None = None,
                 stripper: Stripper | None = None) -> None:
        self.root = root
        self._modules = SysModules(root)
        self.syscalls: Syscalls = syscalls if syscalls is not None else LibcSyscalls()
        self.codec: Codec = codec if codec is not None else _CoreCodec()
        self.stripper: Stripper = stripper if stripper is not None else _CoreStripper()

    @property
    def modules(self) -> SysModules:
        return self._modules

    def insert(self, path: str, options: str | bytes = "", *, force_vermagic: bool = False,
               force_modversion: bool = False) -> InsertResult:
        params = _encode(options)
        try:
            # O_NONBLOCK: a FIFO named as a module must not wait for a writer (the pread
            # below then fails with ESPIPE); a regular file is not affected by it.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            return InsertResult(err.errno or E.EIO, "open")
        try:
            return self._insert_fd(fd, params, force_vermagic, force_modversion)
        finally:
            os.close(fd)

    def _insert_fd(self, fd: int, params: bytes, force_vermagic: bool,
                   force_modversion: bool) -> InsertResult:
        try:
            head = os.pread(fd, MAGIC_READ_SIZE, 0)
        except OSError as err:
            return InsertResult(err.errno or E.EIO, "read")
        if len(head) != MAGIC_READ_SIZE:
            return InsertResult(E.EINVAL, "read", notes=(
                f"the file has {len(head)} bytes; kmod needs {MAGIC_READ_SIZE} to check its "
                "compression",))
        compression = detect_compression(head)
        notes: list[str] = []
        flags = 0  # plain ints: this runs for every insert, and IntFlag operators are slow
        if force_vermagic:
            flags |= _IGNORE_VERMAGIC
        if force_modversion:
            flags |= _IGNORE_MODVERSIONS
        # Only a compressed file needs to know whether the kernel can decompress it.
        kernel_compression = (None if compression is None
                              else self._modules.kernel_compression())
        if compression is None or compression == kernel_compression:
            if compression is not None:
                flags |= _COMPRESSED_FILE
            result = self.syscalls.finit_module(fd, params, flags)
            if result != E.ENOSYS:
                return InsertResult(result, "finit_module", flags, compression)
            notes.append("finit_module gave ENOSYS; falling back to init_module")
        else:
            notes.append(f"the kernel does not decompress {compression} "
                         f"(it has {kernel_compression or 'no decompressor'}): "
                         "decompressing in user space")
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
        except OSError as err:
            return InsertResult(err.errno or E.EIO, "read", 0, compression, tuple(notes))
        if compression is not None:
            plain = self.codec.decompress(compression, data)
            if isinstance(plain, str):
                notes.append(plain)
                return InsertResult(E.EINVAL, "decompress", 0, compression, tuple(notes))
            data = plain
        if force_modversion:
            stripped = self.stripper.strip_section(data, "__versions")
            if isinstance(stripped, str):
                notes.append(f"Failed to strip modversion: {stripped}")
            else:
                data = stripped
        if force_vermagic:
            stripped = self.stripper.strip_vermagic(data)
            if isinstance(stripped, str):
                notes.append(f"Failed to strip vermagic: {stripped}")
            else:
                data = stripped
        result = self.syscalls.init_module(data, params)
        return InsertResult(result, "init_module", 0, compression, tuple(notes))

    def delete(self, name: str, *, force: bool = False) -> int:
        flags = REMOVE_NOWAIT | (REMOVE_FORCE if force else 0)
        return self.syscalls.delete_module(os.fsencode(name), flags)
