"""What the running kernel shows about module loading, parsed from the text it writes.

Pure parsers for `kmodctl explain`: `/proc/kallsyms` (who exports which symbol),
`/proc/keys` (the keys module signatures are checked against), the lockdown mode
(`/sys/kernel/security/lockdown`), `module_blacklist=` on the kernel command line, a
build's `Module.symvers` (the CRCs of vmlinux's exports) and boolean module parameters.
Bad input never raises: what cannot be read is left out (and said so by the caller).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from kmodd.core.kmod.params import split_args

#: An export leaves a `__ksymtab_<name>` symbol in kallsyms (with CONFIG_KALLSYMS_ALL,
#: which Debian's kernels have); that tells exports from mere symbols.
KSYMTAB_PREFIX = "__ksymtab_"
#: Who owns a symbol of the kernel image itself.
VMLINUX = "vmlinux"
#: `/proc/keys` shows key types cut to this many characters ("asymmetri").
KEY_TYPE_WIDTH = 9
#: The kernel's switch for refusing modules on its command line.
MODULE_BLACKLIST_PARAM = "module_blacklist"

_KEY_DESCRIPTION = re.compile(r"^(?P<name>.*): (?P<id>[0-9a-fA-F]+)(?:: |$)")


@dataclass(frozen=True, slots=True)
class Kallsyms:
    """The symbols modules can link against: name -> owner (VMLINUX or a module name).

    `precise` is True when kallsyms marks exports (`__ksymtab_` entries); otherwise every
    global symbol counts, which overstates what a module may use.
    """

    exports: Mapping[str, str]
    precise: bool
    lines: int


def _lines(text: str) -> Iterator[str]:
    """The lines of `text`, one at a time (a large table is never split, or copied, whole)."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        if stop < 0:
            stop = end
        yield text[start:stop]
        start = stop + 1


def parse_kallsyms(text: str | Iterable[str], wanted: Collection[str] | None = None
                   ) -> Kallsyms:
    """Parse `/proc/kallsyms` (`address type name[\\t[module]]` per line).

    With `wanted`, only those names are kept in `exports` (`precise` and `lines` still
    describe the whole table): an explanation asks about one module's symbols, and the
    whole table is some 100,000 names. `text` is the table, or its lines one at a time.
    """
    marked: dict[str, str] = {}
    globals_: dict[str, str] = {}
    any_marked = False
    count = 0
    for line in _lines(text) if isinstance(text, str) else text:
        head, _, tail = line.partition("\t")
        fields = head.split()
        if len(fields) != 3:
            continue
        count += 1
        _, kind, name = fields
        if name.startswith(KSYMTAB_PREFIX):
            any_marked = True
            name = name[len(KSYMTAB_PREFIX):]
            table = marked
        elif kind.isupper():
            table = globals_
        else:
            continue
        if wanted is not None and name not in wanted:
            continue
        tail = tail.strip()
        table.setdefault(name, tail[1:-1] if tail.startswith("[") else VMLINUX)
    if any_marked:
        return Kallsyms(marked, True, count)
    return Kallsyms(globals_, False, count)


@dataclass(frozen=True, slots=True)
class KernelKey:
    """An asymmetric key as `/proc/keys` describes it: `<subject CN>: <key id hex>`."""

    name: str
    key_id: str  # hex, lower case (the subject key identifier, or the serial without one)
    line: int


@dataclass(frozen=True, slots=True)
class Keyrings:
    """The keys and keyrings `/proc/keys` lets this reader see."""

    keys: tuple[KernelKey, ...]
    keyrings: tuple[str, ...]


def parse_proc_keys(text: str) -> Keyrings:
    """Parse `/proc/keys` (`id flags usage timeout perm uid gid type description`)."""
    keys: list[KernelKey] = []
    rings: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split(None, 8)
        if len(fields) < 9:
            continue
        kind, description = fields[7], fields[8]
        if kind == "keyring":
            rings.append(description.split(":", 1)[0])
        elif kind == "asymmetric"[:KEY_TYPE_WIDTH]:
            m = _KEY_DESCRIPTION.match(description)
            if m is not None:
                keys.append(KernelKey(m.group("name"), m.group("id").lower(), lineno))
    return Keyrings(tuple(keys), tuple(rings))


def parse_lockdown(text: str) -> str | None:
    """The current mode of `none [integrity] confidentiality` (the bracketed word)."""
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def parse_bool_param(text: str) -> bool | None:
    """A bool module parameter as sysfs shows it (`Y`/`N`); None for anything else."""
    value = text.strip()
    return {"Y": True, "N": False, "1": True, "0": False}.get(value)


def kernel_cmdline_blacklist(cmdline: str) -> tuple[str, ...]:
    """The modules `module_blacklist=` names (the last such parameter wins, as for any
    charp parameter; `-` and `_` in the parameter name are the same to the kernel)."""
    found: tuple[str, ...] = ()
    for name, value in split_args(cmdline.strip()):
        if name.replace("-", "_") == MODULE_BLACKLIST_PARAM and value is not None:
            found = tuple(v for v in value.split(",") if v)
    return found


def parse_module_symvers(text: str, owner: str = VMLINUX,
                         wanted: Collection[str] | None = None) -> dict[str, int]:
    """`Module.symvers` (`0xCRC<TAB>symbol<TAB>module<TAB>export[<TAB>namespace]`): the CRCs
    of the symbols `owner` exports (only the `wanted` ones, when given)."""
    crcs: dict[str, int] = {}
    for line in _lines(text):
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 3 or fields[2] != owner:
            continue
        if wanted is not None and fields[1] not in wanted:
            continue
        try:
            crcs[fields[1]] = int(fields[0], 16)
        except ValueError:
            continue
    return crcs


def parse_kernel_config(text: str) -> dict[str, str]:
    """A kernel build config (`/boot/config-RELEASE`): `CONFIG_X=value` lines; `# CONFIG_X is
    not set` gives "n"."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:-len(" is not set")]] = "n"
    return values


def vermagic_parts(vermagic: str) -> tuple[str, str]:
    """(release, flags): `6.1.0-56-amd64 SMP preempt mod_unload modversions ` splits at the
    first space, which is where the kernel's `same_magic` cuts when CRCs are in use."""
    release, _, flags = vermagic.partition(" ")
    return release, flags
