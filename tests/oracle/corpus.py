"""The modalias corpus: lookup keys generated from a module tree's own alias patterns.

`build_corpus(moddir)` reads `modules.alias`, `modules.symbols`, `modules.dep`,
`modules.builtin` and `modules.builtin.modinfo` of a depmod'ed tree and returns a deterministic
(fixed seed) list of `Entry(text, bus, kind)` lookup keys:

* `match`: a pattern of every bus with its wildcards filled the way a device prints its
  modalias (hex fields at their kernel width, `?` and `[...]` filled from the allowed set);
* `multi`: strings built to match several patterns at once (a PCI vendor/device pattern plus a
  class pattern, a USB device plus an interface class, `of:` `Cx` together with `CxC*`, ACPI
  ids listed together, several `of:` compatibles);
* `miss`: a match with one field changed (near misses);
* `exact`: the aliases without wildcards (`fs-ext4`, `char-major-*`, `crypto-*`, ...),
  `symbol:` keys, builtin modules and builtin aliases;
* `name`: module names, also with `-`/`_` swapped, with dots, upper case and brackets;
* `qemu`: the QEMU test bed's device strings (tests/data/corpus/qemu-devices.txt and, when it
  exists, the recorded tests/data/qemu/modaliases-rich.txt).

Whether a generated string matches its source pattern is checked with glibc's own `fnmatch`
(the function kmod uses), so `kind` is right; what kmod makes of it is the oracle's business.
Run as a script (`python -m tests.oracle.corpus [moddir]`) it prints the per-bus counts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

SEED = 20240611
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
QEMU_FILES = (os.path.join(DATA_DIR, "corpus", "qemu-devices.txt"),
              os.path.join(DATA_DIR, "qemu", "modaliases-rich.txt"))

#: How many patterns of a bus are turned into `match` (and `miss`) strings: all of a small bus,
#: a share of the big ones. Keys are the text before the first ':' of an alias.
SAMPLE_PER_BUS = {"pci": 720, "usb": 720, "of": 400, "i2c": 120, "hid": 160, "pcmcia": 120,
                  "acpi*": 150, "spi": 90, "hdaudio": 100, "cpu": 70, "dmi*": 110,
                  "platform": 80, "mdio": 60, "ieee1394": 50}
SAMPLE_DEFAULT = 40
MISS_SHARE = 3  # one near miss for every MISS_SHARE matches
MULTI_PER_KIND = 60
SYMBOL_SAMPLE = 200
NAME_SAMPLE = 200
PLAIN_WITH_BUS_LIMIT = 300

HEX = "0123456789ABCDEF"
#: Field layouts of the modalias strings the kernel prints, per bus: (tag, width, alphabet).
#: A `*` or partial value in a pattern's field is completed to the full width.
FIELDS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "pci": (("v", 8, HEX), ("d", 8, HEX), ("sv", 8, HEX), ("sd", 8, HEX), ("bc", 2, HEX),
            ("sc", 2, HEX), ("i", 2, HEX)),
    "usb": (("v", 4, HEX), ("p", 4, HEX), ("d", 4, HEX), ("dc", 2, HEX), ("dsc", 2, HEX),
            ("dp", 2, HEX), ("ic", 2, HEX), ("isc", 2, HEX), ("ip", 2, HEX), ("in", 2, HEX)),
    "hid": (("b", 4, HEX), ("g", 4, HEX), ("v", 8, HEX), ("p", 8, HEX)),
    "hdaudio": (("v", 8, HEX), ("r", 8, HEX), ("a", 2, HEX)),
    "pcmcia": (("m", 4, HEX), ("c", 4, HEX), ("f", 2, HEX), ("fn", 2, HEX), ("pfn", 2, HEX),
               ("pa", 8, HEX), ("pb", 8, HEX), ("pc", 8, HEX), ("pd", 8, HEX)),
    "ieee1394": (("ven", 8, HEX), ("mo", 8, HEX), ("sp", 8, HEX), ("ver", 8, HEX)),
    "sdio": (("c", 2, HEX), ("v", 4, HEX), ("d", 4, HEX)),
    "serio": (("ty", 2, HEX), ("pr", 2, HEX), ("id", 2, HEX), ("ex", 2, HEX)),
    "virtio": (("d", 8, HEX), ("v", 8, HEX)),
    "ssb": (("v", 4, HEX), ("id", 4, HEX), ("rev", 2, HEX)),
    "bcma": (("m", 4, HEX), ("id", 4, HEX), ("rev", 2, HEX), ("cl", 2, HEX)),
    "sdw": (("m", 4, HEX), ("p", 4, HEX), ("v", 2, HEX), ("c", 2, HEX)),
    "mdio": (("", 32, "01"),),
}
#: Filler for a `*` where the bus has no field layout (free text such as dmi or of names).
FREE_FILL = "abcdefghijklmnopqrstuvwxyz0123456789"
#: Values real devices print, used for most `*` fields (the rest get random values), so that
#: strings look like devices and also reach the class patterns. "=" copies the field `tag`
#: names (pci subsystem ids often repeat the vendor/device ids).
REALISTIC: dict[tuple[str, str], tuple[str, ...]] = {
    ("pci", "sv"): ("=v", "00001AF4", "00000000", "0000103C", "000017AA", "00001028"),
    ("pci", "sd"): ("=d", "00001100", "00000000", "00000001", "0000225A"),
    ("pci", "bc"): ("01", "02", "03", "04", "06", "07", "08", "0C", "0D", "00", "FF"),
    ("pci", "sc"): ("00", "01", "03", "05", "06", "80", "04"),
    ("pci", "i"): ("00", "01", "10", "20", "30", "02"),
    ("usb", "d"): ("0000", "0100", "0200", "0310", "1000", "0601"),
    ("usb", "dc"): ("00", "00", "00", "02", "09", "EF", "FF", "E0"),
    ("usb", "dsc"): ("00", "00", "02", "01"),
    ("usb", "dp"): ("00", "00", "01", "03"),
    ("usb", "ic"): ("01", "02", "03", "08", "09", "0A", "0E", "E0", "FF"),
    ("usb", "isc"): ("00", "01", "02", "06", "FF"),
    ("usb", "ip"): ("00", "01", "02", "50", "62", "FF"),
    ("usb", "in"): ("00", "01", "02", "03"),
    ("hid", "g"): ("0001", "0101", "0004", "0102"),
    ("hdaudio", "r"): ("00100001", "00100101", "00100002", "00100400"),
    ("hdaudio", "a"): ("01", "02"),
}
#: Text a device prints where a free-text pattern has a `*`, per bus.
FREE_STAR: dict[str, tuple[str, ...]] = {
    "acpi": ("", "", "PNP0C02:", "PNP0A05:", "ACPI0003:"),
    "cpu": (",0000,0001,0002,0003,0004,0005,0006,0081,0089,0094,0099,009C,00C2",
            ",0000,0003,0009,007D,0080,0085,0125"),
    "dmi": ("", "bvnLENOVO:", "svnDellInc.:", "pvr1.0:", "rvnASUSTeKCOMPUTERINC.:"),
    "input": ("0", "1,", "0,1,4,11,14,", "71,72,73,"),
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One lookup key of the corpus and where it came from."""

    text: str
    bus: str
    kind: str  # match, multi, miss, exact, name, qemu


class _Fnmatch:
    """glibc fnmatch(pattern, string, 0): what kmod uses to match alias patterns."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self._f = libc.fnmatch
        self._f.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self._f.restype = ctypes.c_int

    def __call__(self, pattern: str, text: str) -> bool:
        return bool(self._f(pattern.encode(), text.encode(), 0) == 0)


def bus_of(alias: str) -> str:
    """The text before the first ':' (`acpi*` for `acpi*:PNP0501:*`), or `-` for none."""
    return alias.split(":", 1)[0] if ":" in alias else "-"


def read_aliases(moddir: str) -> list[tuple[str, str]]:
    """(pattern, module) pairs of `modules.alias`, in file order."""
    pairs = []
    with open(os.path.join(moddir, "modules.alias"), encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias":
                pairs.append((parts[1], parts[2]))
    return pairs


# --- filling patterns ---------------------------------------------------------------------------

def _bracket_end(pattern: str, i: int) -> int:
    """Index of the `]` closing the bracket expression that starts at pattern[i] == '['."""
    j = i + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 1
    return j


def _bracket_choice(expr: str, alphabet: str, rng: random.Random) -> str:
    """A character matching the bracket expression `expr` (without the brackets)."""
    negate = expr[:1] in ("!", "^")
    body = expr[1:] if negate else expr
    allowed: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            allowed.update(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
            i += 3
        else:
            allowed.add(body[i])
            i += 1
    pool = [c for c in alphabet if (c in allowed) != negate] or sorted(allowed) or ["x"]
    return rng.choice(pool)


def _fill_piece(piece: str, width: int | None, alphabet: str, rng: random.Random,
                free: tuple[str, ...] = ()) -> str:
    """Concrete text for a pattern fragment; `*` completes the value to `width` characters.

    Without a width, a `*` becomes one of `free` (when given, most of the time) or a few
    characters of `alphabet`.
    """
    fixed = 0
    i = 0
    tokens: list[tuple[str, str]] = []
    while i < len(piece):
        c = piece[i]
        if c == "*":
            tokens.append(("*", ""))
        elif c == "?":
            tokens.append(("?", ""))
            fixed += 1
        elif c == "[":
            j = _bracket_end(piece, i)
            tokens.append(("[", piece[i + 1 : j]))
            fixed += 1
            i = j
        elif c == "\\" and i + 1 < len(piece):
            tokens.append(("lit", piece[i + 1]))
            fixed += 1
            i += 1
        else:
            tokens.append(("lit", c))
            fixed += 1
        i += 1
    stars = sum(1 for t, _ in tokens if t == "*")
    out = []
    for kind, val in tokens:
        if kind == "lit":
            out.append(val)
        elif kind == "?":
            out.append(rng.choice(alphabet))
        elif kind == "[":
            out.append(_bracket_choice(val, alphabet, rng))
        else:  # "*": the first star takes what the width still needs, later ones nothing
            if width is not None:
                n = max(0, width - fixed) if stars else 0
                stars = 0
            elif free and rng.random() < 0.8:
                out.append(rng.choice(free))
                continue
            else:
                n = rng.choice((0, 1, 3, 6))
            out.append("".join(rng.choice(alphabet) for _ in range(n)))
    return "".join(out)


def _split_fields(body: str, fields: Sequence[tuple[str, int, str]]) -> list[str] | None:
    """Split a pattern body (after `bus:`) into one fragment per field, or None."""
    if len(fields) == 1 and fields[0][0] == "":
        return [body]
    regex = "".join(f"{re.escape(tag)}(.*?)" for tag, _, _ in fields[:-1])
    regex += re.escape(fields[-1][0]) + "(.*)"
    m = re.fullmatch(regex, body, re.DOTALL)
    return list(m.groups()) if m else None


def fill(pattern: str, rng: random.Random) -> str:
    """A device string that a kernel could print and that `pattern` matches (best effort)."""
    bus = bus_of(pattern)
    layout = FIELDS.get(bus)
    if layout is not None:
        body = pattern[len(bus) + 1 :]
        pieces = _split_fields(body, layout)
        if pieces is not None:
            values: dict[str, str] = {}
            for (tag, width, alphabet), piece in zip(layout, pieces, strict=True):
                pool = REALISTIC.get((bus, tag))
                if piece == "*" and pool and rng.random() < 0.75:
                    value = rng.choice(pool)
                    value = values.get(value[1:], "") if value.startswith("=") else value
                    if len(value) != width:
                        value = _fill_piece("*", width, alphabet, rng)
                else:
                    value = _fill_piece(piece, width, alphabet, rng)
                values[tag] = value
            return bus + ":" + "".join(tag + values[tag] for tag, _, _ in layout)
    if bus == "of":
        return _fill_of(pattern, rng)
    head = pattern
    if bus in ("acpi*", "dmi*"):
        head = bus[:-1] + pattern[len(bus):]  # the device prints "acpi:", not "acpi*:"
    return _fill_piece(head, None, FREE_FILL, rng, FREE_STAR.get(bus.rstrip("*"), ()))


def _fill_of(pattern: str, rng: random.Random) -> str:
    # of:N<name>T<type>C<compatible>[C<compatible>...]: the kernel prints "<NULL>" for no type.
    m = re.fullmatch(r"of:N(.*?)T(.*?)C(.*)", pattern)
    if not m:
        return _fill_piece(pattern, None, FREE_FILL, rng)
    name = _fill_piece(m.group(1), None, FREE_FILL, rng) if m.group(1) != "*" else \
        rng.choice(("serial", "i2c", "sensor", "gpio", "codec", "pmic"))
    typ = _fill_piece(m.group(2), None, FREE_FILL, rng) if m.group(2) != "*" else "<NULL>"
    compat = m.group(3)
    if compat.endswith("C*"):  # "CxC*": the device lists more compatibles after x
        tail = rng.choice(("", "Cgeneric,fallback", "Csimple-bus"))
        compat = _fill_piece(compat[:-2], None, FREE_FILL, rng) + tail
    else:
        compat = _fill_piece(compat, None, FREE_FILL, rng)
    return f"of:N{name}T{typ}C{compat}"


def near_miss(text: str, bus: str, rng: random.Random) -> str:
    """`text` with one field value changed (a hex digit, a letter, a character)."""
    layout = FIELDS.get(bus)
    positions = []
    if layout is not None:
        alphabet = layout[0][2]
        body_start = len(bus) + 1
        positions = [i for i in range(body_start, len(text)) if (text[i] in alphabet
                     and text[i].isupper()) or text[i].isdigit()]
    else:
        alphabet = FREE_FILL
        start = text.find(":") + 1
        positions = list(range(start, len(text)))
    if not positions:
        return text + "x"
    i = rng.choice(positions)
    choices = [c for c in alphabet if c != text[i]] or ["x"]
    return text[:i] + rng.choice(choices) + text[i + 1 :]


# --- the corpus ---------------------------------------------------------------------------------

def _sample(items: Sequence[tuple[str, str]], n: int, rng: random.Random) -> list[tuple[str, str]]:
    if len(items) <= n:
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), n))]


def _pattern_matches(fnm: _Fnmatch, pats: Iterable[str], text: str) -> bool:
    return any(fnm(p, text) for p in pats)


def _multi(aliases: Sequence[tuple[str, str]], rng: random.Random,
           fnm: _Fnmatch) -> Iterator[Entry]:
    pci_vd = [p for p, _ in aliases if p.startswith("pci:v0") and "bc*sc*i*" in p]
    pci_class = [p for p, _ in aliases if p.startswith("pci:v*d*") and "bc*" not in p]
    usb_dev = [p for p, _ in aliases if p.startswith("usb:v") and p.endswith("ic*isc*ip*in*")
               and not p.startswith("usb:v*")]
    usb_class = [p for p, _ in aliases if p.startswith("usb:v*p*d*") and "ic*" not in p]
    of_pairs = sorted({p[:-2] for p, _ in aliases if p.startswith("of:") and p.endswith("C*")}
                      & {p for p, _ in aliases if p.startswith("of:")})
    of_all = [p for p, _ in aliases if p.startswith("of:N*T*C") and not p.endswith("C*")]
    acpi = [p for p, _ in aliases if re.fullmatch(r"acpi\*:[A-Z0-9]+:\*", p)]

    def combine(a: str, b: str, bus: str, take_from_b: set[str]) -> str:
        """Fields of `a`'s fill, with the fields named in take_from_b from `b`'s fill."""
        layout = FIELDS[bus]
        fa = _split_fields(fill(a, rng)[len(bus) + 1 :], layout)
        fb = _split_fields(fill(b, rng)[len(bus) + 1 :], layout)
        assert fa is not None and fb is not None
        return bus + ":" + "".join(tag + (vb if tag in take_from_b else va)
                                   for (tag, _, _), va, vb in zip(layout, fa, fb, strict=True))

    for _ in range(MULTI_PER_KIND):
        a, b = rng.choice(pci_vd), rng.choice(pci_class)
        text = combine(a, b, "pci", {"bc", "sc", "i"})
        if fnm(a, text) and fnm(b, text):
            yield Entry(text, "pci", "multi")
    for _ in range(MULTI_PER_KIND):
        a, b = rng.choice(usb_dev), rng.choice(usb_class)
        text = combine(a, b, "usb", {"ic", "isc", "ip"})
        if fnm(a, text) and fnm(b, text):
            yield Entry(text, "usb", "multi")
    for p in _sample([(p, "") for p in of_pairs], MULTI_PER_KIND, rng):
        text = _fill_of(p[0], rng)
        if fnm(p[0], text) and fnm(p[0] + "C*", text + "Cx"):
            yield Entry(text, "of", "multi")
            yield Entry(text + "Cgeneric,fallback", "of", "multi")
    for _ in range(MULTI_PER_KIND // 2):
        a, b = rng.choice(of_all), rng.choice(of_all)
        yield Entry(f"of:NnodeT<NULL>C{a[len('of:N*T*C'):]}C{b[len('of:N*T*C'):]}", "of",
                    "multi")
    for _ in range(MULTI_PER_KIND // 2):
        a, b = rng.choice(acpi), rng.choice(acpi)
        yield Entry(f"acpi:{a.split(':')[1]}:{b.split(':')[1]}:", "acpi*", "multi")


def _names(moddir: str, rng: random.Random) -> Iterator[Entry]:
    names = []
    with open(os.path.join(moddir, "modules.dep"), encoding="ascii") as f:
        for line in f:
            names.append(os.path.basename(line.split(":", 1)[0]).split(".", 1)[0])
    picked = [names[i] for i in sorted(rng.sample(range(len(names)), NAME_SAMPLE))]
    for n in picked:
        if "-" in n:
            yield Entry(n, "-", "name")
        swapped = n.replace("_", "-") if "_" in n else n.replace("-", "_")
        if swapped != n:
            yield Entry(swapped, "-", "name")
    for n in picked[:60]:
        yield Entry(n + ".ko", "-", "name")  # '.' is kept by alias_normalize: not found
        yield Entry(n.upper(), "-", "name")
        yield Entry(n + "-", "-", "name")
    for n in picked[:20]:
        yield Entry(n[:1] + "[" + n[1:2] + "]" + n[2:], "-", "name")
        yield Entry(n + "]", "-", "name")
        yield Entry(n + "[", "-", "name")
        yield Entry("[" + n, "-", "name")
        yield Entry(n.replace("_", "[-_]", 1) if "_" in n else n + "[-]", "-", "name")
        yield Entry(n + ".", "-", "name")
        yield Entry("./" + n, "-", "name")


def _exact(aliases: Sequence[tuple[str, str]], moddir: str,
           rng: random.Random) -> Iterator[Entry]:
    plain = [p for p, _ in aliases if not any(c in p for c in "*?[")]
    # Every alias without a bus prefix (fs-*, char-major-*, crypto-*, net-pf-*, ...), and a
    # sample of the exact ones with a prefix (i2c:, spi:, platform:, ...).
    yield from (Entry(p, "-", "exact") for p in dict.fromkeys(p for p in plain if ":" not in p))
    with_bus = sorted(set(p for p in plain if ":" in p))
    for p, _ in _sample([(p, "") for p in with_bus], PLAIN_WITH_BUS_LIMIT, rng):
        yield Entry(p, bus_of(p), "exact")
    symbols = []
    with open(os.path.join(moddir, "modules.symbols"), encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1].startswith("symbol:"):
                symbols.append((parts[1], parts[2]))
    symbols.sort()
    for s, _ in _sample(symbols, SYMBOL_SAMPLE, rng):
        yield Entry(s, "symbol", "exact")
    yield Entry("symbol:kmodd_no_such_symbol", "symbol", "miss")
    yield Entry("symbol:", "symbol", "miss")
    builtin_path = os.path.join(moddir, "modules.builtin")
    if os.path.exists(builtin_path):
        with open(builtin_path, encoding="ascii") as f:
            for line in f:
                base = os.path.basename(line.strip()).split(".", 1)[0]
                if base:
                    yield Entry(base, "builtin", "exact")
                    if "-" in base:
                        yield Entry(base.replace("-", "_"), "builtin", "exact")
    modinfo = os.path.join(moddir, "modules.builtin.modinfo")
    if os.path.exists(modinfo):
        with open(modinfo, "rb") as fb:
            for rec in fb.read().split(b"\0"):
                key, _, value = rec.decode("ascii", "replace").partition("=")
                if key.endswith(".alias") and value:
                    yield Entry(value, "builtin", "exact")


def _oddities(aliases: Sequence[tuple[str, str]], rng: random.Random) -> Iterator[Entry]:
    """Raw patterns as keys, case changes, brackets and dots in device strings."""
    for p, _ in _sample(aliases, 40, rng):
        if not p.startswith("-"):
            yield Entry(p, bus_of(p), "name")  # the pattern text itself as a literal key
    for p, _ in _sample([a for a in aliases if a[0].startswith(("pci:", "usb:"))], 40, rng):
        text = fill(p, rng)
        yield Entry(text.lower(), bus_of(p), "miss")  # kernels print upper-case hex
    for text in ("pci:v[", "pci:v]", "usb:v0424p9D0[01]", "of:N[a-z]T*Cfoo", "acpi:PNP0501:]",
                 "pci:v00008086d0000100E.sv", "platform:foo.bar", "fs-ext4.ko", "fs-ext4.",
                 "i2c:tpm_i2c_atmel[1]", "dmi:bvn[SeaBIOS]:", "char-major-10-[0-9]",
                 "net-pf-[0-9]", "crypto-sha256*", "pci:*", "usb:*", "*", "?", "[", "]",
                 "[]", "[!]", "\\", "a\\*", "of:N*T*C*", "acpi*:*", "fs-*", "fs-ext?",
                 "FS-EXT4", "Fs-ext4", "fs_ext4", "char_major_10_229", "char-major-10-229",
                 "block-major-8-0", "net-pf-10", "net_pf_10", "devname:fuse", "devname_fuse",
                 "symbol:SYMBOL_NOT_HERE", "crypto-aes", "crypto_aes", "CRYPTO-AES"):
        yield Entry(text, bus_of(text), "name")


def _qemu() -> Iterator[Entry]:
    for path in QEMU_FILES:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield Entry(line, bus_of(line), "qemu")


def build_corpus(moddir: str, *, seed: int = SEED) -> list[Entry]:
    """The corpus for the tree at `moddir` (deterministic for a given tree and seed)."""
    rng = random.Random(seed)
    fnm = _Fnmatch()
    aliases = read_aliases(moddir)
    by_bus: dict[str, list[tuple[str, str]]] = {}
    for pattern, mod in aliases:
        by_bus.setdefault(bus_of(pattern), []).append((pattern, mod))
    entries: list[Entry] = []
    for bus in sorted(by_bus):
        if bus == "-":
            continue
        picked = _sample(by_bus[bus], SAMPLE_PER_BUS.get(bus, SAMPLE_DEFAULT), rng)
        for n, (pattern, _) in enumerate(picked):
            text = fill(pattern, rng)
            entries.append(Entry(text, bus, "match" if fnm(pattern, text) else "miss"))
            if n % MISS_SHARE == 0:
                miss = near_miss(text, bus, rng)
                entries.append(Entry(miss, bus, "match" if fnm(pattern, miss) else "miss"))
    entries.extend(_multi(aliases, rng, fnm))
    entries.extend(_exact(aliases, moddir, rng))
    entries.extend(_names(moddir, rng))
    entries.extend(_oddities(aliases, rng))
    entries.extend(_qemu())
    # Keys that modprobe would take for options (leading '-') or that are empty are left out;
    # the first occurrence of a text wins.
    seen: set[str] = set()
    out = []
    for e in entries:
        if e.text and not e.text.startswith("-") and "\0" not in e.text and e.text not in seen:
            seen.add(e.text)
            out.append(e)
    return out


def counts(entries: Sequence[Entry]) -> dict[str, Counter[str]]:
    """Per bus, how many entries of each kind."""
    table: dict[str, Counter[str]] = {}
    for e in entries:
        table.setdefault(e.bus, Counter())[e.kind] += 1
    return table


def format_counts(entries: Sequence[Entry]) -> str:
    kinds = ("match", "multi", "miss", "exact", "name", "qemu")
    table = counts(entries)
    lines = [f"{'bus':<16}" + "".join(f"{k:>7}" for k in kinds) + f"{'total':>8}"]
    for bus in sorted(table, key=lambda b: (-sum(table[b].values()), b)):
        c = table[bus]
        lines.append(f"{bus:<16}" + "".join(f"{c[k]:>7}" for k in kinds)
                     + f"{sum(c.values()):>8}")
    total: Counter[str] = Counter(e.kind for e in entries)
    lines.append(f"{'all':<16}" + "".join(f"{total[k]:>7}" for k in kinds)
                 + f"{len(entries):>8}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    if argv:
        moddir = argv[0]
    else:
        from tests import kerneltree

        moddir = kerneltree.debian_kernel_tree().moddir
    print(format_counts(build_corpus(moddir)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
