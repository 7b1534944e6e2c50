"""`modinfo`: a module's `.modinfo`, signature and parameters, exactly as kmod 30 prints them.

An argument that is an existing regular file with a module extension is read as a file;
anything else is looked up (by alias, or by name with `-m`) through `ModuleLookup`, which the
resolver provides. For each module: `filename:` first (`name:` and `filename: (builtin)` for a
built-in), then the `.modinfo` strings in section order, then the signature fields, then the
parameters merged from `parm` and `parmtype` (newest name first, as kmod's list is built by
prepending). `-F FIELD` prints bare values; `-0` ends records with NUL and prints `key=value`.

Debian's kmod 30 is built with zstd and xz but without zlib, so `.ko.gz` is not a module
extension for it and gzip data is not decompressed; `DEBIAN_KMOD_EXTENSIONS` and
`kmodd.system.modfile` record that so the output stays identical.
"""

from __future__ import annotations

import errno as E
import mmap
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kmodd.cli.gnuopt import Arg, GetoptLong, LongOpt, OptError
from kmodd.cli.kmodtool import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    VERSION_TEXT,
    ToolLog,
    fs_bytes,
    reports_index_damage,
)
from kmodd.core.kmod.config import build_config
from kmodd.core.kmod.libkmodlog import strerror
from kmodd.core.kmod.normalize import modname_normalize
from kmodd.core.kmod.resolve import Builtin, Module, ModuleLookupError, Resolver
from kmodd.core.modfile import elf
from kmodd.core.modfile.signature import SignatureInfo, modinfo_fields, parse_module_signature
from kmodd.system.moddb import raw_indexes, read_cmdline
from kmodd.system.modfile import map_module, module_image
from kmodd.system.root import MODULE_DIRECTORY, Root, kernel_release
from kmodd.system.sysview import FileView

SHORT_OPTIONS = "adlpn0mF:k:b:Vh"
LONG_OPTIONS = (
    LongOpt("author", Arg.NONE, "a"),
    LongOpt("description", Arg.NONE, "d"),
    LongOpt("license", Arg.NONE, "l"),
    LongOpt("parameters", Arg.NONE, "p"),
    LongOpt("filename", Arg.NONE, "n"),
    LongOpt("null", Arg.NONE, "0"),
    LongOpt("modname", Arg.NONE, "m"),
    LongOpt("field", Arg.REQUIRED, "F"),
    LongOpt("set-version", Arg.REQUIRED, "k"),
    LongOpt("basedir", Arg.REQUIRED, "b"),
    LongOpt("version", Arg.NONE, "V"),
    LongOpt("help", Arg.NONE, "h"),
)
#: The field each shortcut option selects.
FIELD_SHORTCUTS: Mapping[str, str] = {
    "a": "author", "d": "description", "l": "license", "p": "parm", "n": "filename",
}

HELP = ("Usage:\n"
        "\t{prog} [options] <modulename|filename> [args]\n"
        "Options:\n"
        "\t-a, --author                Print only 'author'\n"
        "\t-d, --description           Print only 'description'\n"
        "\t-l, --license               Print only 'license'\n"
        "\t-p, --parameters            Print only 'parm'\n"
        "\t-n, --filename              Print only 'filename'\n"
        "\t-0, --null                  Use \\0 instead of \\n\n"
        "\t-m, --modname               Handle argument as module name instead of alias or "
        "filename\n"
        "\t-F, --field=FIELD           Print only provided FIELD\n"
        "\t-k, --set-version=VERSION   Use VERSION instead of `uname -r`\n"
        "\t-b, --basedir=DIR           Use DIR as filesystem root for /lib/modules\n"
        "\t-V, --version               Show version\n"
        "\t-h, --help                  Show this help\n")

#: Module file extensions of Debian's kmod 30 build (`kmod_exts`: no .ko.gz without zlib).
DEBIAN_KMOD_EXTENSIONS = (".ko", ".ko.xz", ".ko.zst")
#: The file of built-in modules' `.modinfo` strings (`modname.key=value\0`).
MODULES_BUILTIN_MODINFO = "modules.builtin.modinfo"
#: The keys the signature adds (`kmod_module_get_info`).
SIGNATURE_KEYS = frozenset({b"sig_id", b"signer", b"sig_key", b"sig_hashalgo", b"signature"})
#: Width of the key column in the default output (`%-16s`, and `key:%-*s` with 15 - len).
KEY_COLUMN = 16


@dataclass(frozen=True, slots=True)
class FoundModule:
    """A module a lookup found: its file (None when modules.dep has none), built in or not."""

    name: str
    path: str | None
    builtin: bool = False


class ModuleLookup(Protocol):
    """Name and alias lookups (kmod_module_new_from_lookup / _from_name_lookup)."""

    def by_alias(self, text: str) -> list[FoundModule] | int: ...

    def by_name(self, name: str) -> FoundModule | None: ...


@dataclass(frozen=True, slots=True)
class ModinfoData:
    """What kmod_module_get_info returns: `.modinfo` strings and maybe a signature."""

    strings: list[bytes]
    signature: SignatureInfo | None


def is_module_filename(path: str) -> bool:
    """An existing regular file whose name ends in a module extension kmod knows."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and any(
        len(path) > len(ext) and path.endswith(ext) for ext in DEBIAN_KMOD_EXTENSIONS)


def absolute_path(path: str, environ: Mapping[str, str]) -> str:
    """libkmod's `path_make_absolute_cwd`: cwd (as get_current_dir_name gives it) + / + path."""
    if path.startswith("/"):
        return path
    cwd = os.getcwd()
    pwd = environ.get("PWD")
    if pwd:
        try:
            a, b = os.stat(pwd), os.stat(".")
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                cwd = pwd
        except OSError:
            pass
    return f"{cwd}/{path}"


def read_module_info(path: str, *, signature: bool = True) -> ModinfoData | int:
    """`.modinfo` strings and signature of a module file, or the errno kmod would report."""
    image = map_module(path)
    if isinstance(image, int):
        return image
    try:
        return _module_info(path, image, signature)
    finally:
        if isinstance(image, mmap.mmap):
            image.close()


def _module_info(path: str, image: bytes | mmap.mmap, with_signature: bool) -> ModinfoData | int:
    data = module_image(image)
    if isinstance(data, int):
        return data
    try:
        strings: list[str] = elf.parse_module(data, path).strings(".modinfo")
    except elf.ElfError as err:
        code = err.errno
        return code
    signature = parse_module_signature(data) if with_signature else None
    return ModinfoData([s.encode("latin-1") for s in strings],
                       signature if isinstance(signature, SignatureInfo) else None)


def read_builtin_info(moddir: str, name: str) -> ModinfoData | int:
    """A built-in module's strings from `modules.builtin.modinfo` (`kmod_builtin_get_modinfo`).

    Strings are grouped by their `modname.` prefix; the first group of `name` is used.
    Returns ENOENT when the file is missing and ENOSYS when the module is not in it.
    """
    try:
        with open(os.path.join(moddir, MODULES_BUILTIN_MODINFO), "rb") as f:
            data = f.read()
    except OSError as err:
        return err.errno or E.EIO
    wanted = name.encode("latin-1", "replace")
    current: bytes | None = None
    found: list[bytes] = []
    for record in data.split(b"\0"):
        if not record:
            continue
        dot = record.find(b".")
        if dot < 0:
            break
        prefix = record[:dot]
        if prefix != current:
            if found:
                break
            current = prefix
        if prefix == wanted:
            found.append(record[dot + 1:])
    if not found:
        return E.ENOSYS
    return ModinfoData(found, None)


def _c_string(value: bytes) -> bytes:
    """What printf("%s") prints of a value: up to its first NUL."""
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def _split(entry: bytes) -> tuple[bytes, bytes]:
    key, eq, value = entry.partition(b"=")
    return key, value if eq else b""


class _Params:
    """kmod's parameter list: a name list built by prepending, param/type set last-wins."""

    def __init__(self) -> None:
        self.order: list[bytes] = []
        self.param: dict[bytes, bytes | None] = {}
        self.type: dict[bytes, bytes | None] = {}

    def add(self, key: bytes, value: bytes, log: ToolLog) -> None:
        colon = value.find(b":")
        if colon < 0:
            log.err(f"Found invalid \"{key.decode('latin-1')}={value.decode('latin-1')}\": "
                    "missing ':'\n")
            return
        name, rest = value[:colon], value[colon + 1:]
        if name not in self.param:
            self.order.insert(0, name)
            self.param[name] = None
            self.type[name] = None
        if key == b"parm":
            self.param[name] = rest
        else:
            self.type[name] = rest

    def lines(self, sep: bytes, *, keyed: bool) -> Iterable[bytes]:
        prefix = b"parm:".ljust(KEY_COLUMN) if keyed else b""
        for name in self.order:
            param, type_ = self.param[name], self.type[name]
            if param is None:
                middle = b":" if keyed else b": ("
                tail = b"" if keyed else b")"
                yield prefix + name + middle + (type_ or b"") + tail + sep
            elif type_ is not None:
                yield prefix + name + b":" + param + b" (" + type_ + b")" + sep
            else:
                yield prefix + name + b":" + param + sep


class Modinfo:
    """One modinfo run's settings and output."""

    def __init__(self, *, field: str | None, sep: bytes, moddir: str, stdout: BinaryIO,
                 log: ToolLog) -> None:
        self.field = field.encode("utf-8", "surrogateescape") if field is not None else None
        self.sep = sep
        self.moddir = moddir
        self.out = stdout
        self.log = log

    def show(self, name: str, path: str | None, builtin: bool = False) -> int:
        """`modinfo_do`: print one module; returns 0 or an errno.

        The header lines follow the path (none: `(builtin)`); the strings come from
        modules.builtin.modinfo when the index says built-in, else from the file, as
        `kmod_module_get_info` decides.
        """
        field, sep, out = self.field, self.sep, self.out
        name_b = name.encode("latin-1", "replace")
        if path is None:
            if field is None:
                out.write(b"name:".ljust(KEY_COLUMN) + name_b + sep)
            elif field == b"name":
                out.write(name_b + sep)
            filename = b"(builtin)"
        else:
            filename = fs_bytes(path)
        if field == b"filename":
            out.write(filename + sep)
            return 0
        if field is None:
            out.write(b"filename:".ljust(KEY_COLUMN) + filename + sep)
        if builtin:
            info = read_builtin_info(self.moddir, name)
        elif path is None:
            info = E.ENOENT
        else:
            # A field that is not a signature key prints the same whatever the signature is.
            info = read_module_info(path, signature=field is None or field in SIGNATURE_KEYS)
        if isinstance(info, int):
            if path is None and info == E.ENOENT:
                return 0  # no modules.builtin.modinfo (old kernel), or no file to read
            self.log.err(f"could not get modinfo from '{name}': {strerror(info)}\n")
            return info
        entries = [_split(s) for s in info.strings]
        if info.signature is not None:
            entries += list(modinfo_fields(info.signature))
        params = _Params()
        if field == b"parm":
            for key, value in entries:
                if key in (b"parm", b"parmtype"):
                    params.add(key, value, self.log)
            out.write(b"".join(params.lines(sep, keyed=False)))
            return 0
        chunks: list[bytes] = []
        for key, value in entries:
            value = _c_string(value)
            if field is not None:
                if key == field:
                    chunks.append(value + sep)
                continue
            if key in (b"parm", b"parmtype"):
                params.add(key, value, self.log)
                continue
            if sep == b"\0":
                chunks.append(key + b"=" + value + sep)
                continue
            pad = b" " * abs(15 - len(key))  # printf's %-*s takes a negative width as its size
            chunks.append(key + b":" + pad + value + sep)
        if field is None:
            chunks.extend(params.lines(sep, keyed=True))
        out.write(b"".join(chunks))
        return 0


class ResolverLookup:
    """modinfo's lookups through kmodd.core.kmod.resolve, as a libkmod context with no config.

    modinfo calls `kmod_new(dirname, &null_config)`: no modprobe.d file is read, so only the
    indexes (and the kernel command line) count. `-m` is kmod_module_new_from_name_lookup:
    modules.dep by exact name, else modules.builtin.
    """

    def __init__(self, resolver: Resolver, log: ToolLog) -> None:
        self.resolver = resolver
        self.log = log

    def by_alias(self, text: str) -> list[FoundModule] | int:
        try:
            modules = self.resolver.lookup(text)
        except ModuleLookupError as err:
            code: int = err.errno
            return code
        return [self._found(m) for m in modules]

    def by_name(self, name: str) -> FoundModule | None:
        key = modname_normalize(name)
        line = self.resolver.indexes.dep_line(key)
        if line is not None:
            module = self.resolver.new_from_name(key)
            self.resolver.parse_depline(module, line)
            return self._found(module)
        if self.resolver.indexes.builtin(key):
            module = self.resolver.new_from_name(key)
            module.builtin = Builtin.YES
            return self._found(module)
        return None

    def _found(self, module: Module) -> FoundModule:
        path: str | None = self.resolver.path(module)
        builtin: bool = self.resolver.is_builtin(module)
        return FoundModule(module.name, path, builtin)


def default_lookup(root: Root, moddir: str, log: ToolLog) -> ModuleLookup | str:
    """The resolver's lookups over `moddir`."""
    indexes, _problems = raw_indexes(moddir)
    resolver = Resolver(indexes, build_config([], read_cmdline(root)), FileView(root),
                        log=lambda record: None)
    return ResolverLookup(resolver, log)


@reports_index_damage("modinfo")
def run(argv: Sequence[str], *, root: Root, stdout: BinaryIO, stderr: BinaryIO,
        environ: Mapping[str, str], lookup: ModuleLookup | None = None) -> int:
    prog = os.path.basename(argv[0]) if argv else "modinfo"
    log = ToolLog(prog, stderr)
    field: str | None = None
    sep = b"\n"
    by_name = False
    kversion: str | None = None
    basedir: str | None = None
    parser = GetoptLong(argv, SHORT_OPTIONS, LONG_OPTIONS)
    for item in parser:
        if isinstance(item, OptError):
            stderr.write(fs_bytes(item.message))
            return EXIT_FAILURE
        key = item.key
        if key in FIELD_SHORTCUTS:
            field = FIELD_SHORTCUTS[key]
        elif key == "0":
            sep = b"\0"
        elif key == "m":
            by_name = True
        elif key == "F":
            field = item.value
        elif key == "k":
            kversion = item.value
        elif key == "b":
            basedir = item.value
        elif key == "h":
            stdout.write(fs_bytes(HELP.format(prog=prog)))
            return EXIT_SUCCESS
        elif key == "V":
            stdout.write(VERSION_TEXT)
            return EXIT_SUCCESS
    if not parser.operands:
        log.err("missing module or filename.\n")
        return EXIT_FAILURE
    kver = kversion if kversion is not None else kernel_release()
    if basedir is not None or kversion is not None:
        moddir = f"{basedir or ''}{MODULE_DIRECTORY}/{kver}"
    else:
        moddir = root.path(f"{MODULE_DIRECTORY}/{kver}")
    shower = Modinfo(field=field, sep=sep, moddir=moddir, stdout=stdout, log=log)
    resolved: ModuleLookup | str | None = lookup
    failed = False
    for arg in parser.operands:
        if not by_name and is_module_filename(arg):
            result = shower.show(modname_normalize(os.path.basename(arg)),
                                 absolute_path(arg, environ))
        else:
            if resolved is None:
                resolved = default_lookup(root, moddir, log)
            result = _lookup_and_show(arg, by_name, resolved, shower, log)
        failed = failed or result != 0
    return EXIT_FAILURE if failed else EXIT_SUCCESS


def _lookup_and_show(arg: str, by_name: bool, lookup: ModuleLookup | str, shower: Modinfo,
                     log: ToolLog) -> int:
    if isinstance(lookup, str):
        log.err(f"cannot look up '{arg}': {lookup}\n")
        return E.ENOSYS
    if by_name:
        found = lookup.by_name(arg)
        if found is None:
            log.err(f"Module name {arg} not found.\n")
            return E.ENOENT
        return shower.show(found.name, found.path, found.builtin)
    modules = lookup.by_alias(arg)
    if isinstance(modules, int):
        log.err(f"Module alias {arg} not found.\n")
        return modules
    if not modules:
        log.err(f"Module {arg} not found.\n")
        return E.ENOENT
    result = 0
    for module in modules:
        r = shower.show(module.name, module.path, module.builtin)
        if r:
            result = r
    return result
