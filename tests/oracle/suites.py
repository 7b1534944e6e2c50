"""The differential test suites: which commands run against which fake root.

A `Suite` is a named list of `Case`s and the fake root they run against. The oracle side runs
each suite once per session through `kmodrun` (cached on disk, see `cache.py`); kmodd runs the
same cases in-process and, for a sample, through the installed command. All Debian-tree suites
pass `-d <tree> -S <kver>`, so the module directory is the real Debian 6.1 tree; the fake root
only supplies (or withholds) the config directories, `/proc/cmdline` and `/sys/module`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .corpus import Entry
from .kmodrun import Case, write_tree

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIRKS_ROOT = os.path.join(TESTS_DIR, "data", "modprobe.d-quirks")
QUIRKS_EXTRA = os.path.join(QUIRKS_ROOT, "extra")

#: Every SAMPLE_STRIDE-th module of the tree gets the `-b`, `-i`, `-R` variants.
SAMPLE_STRIDE = 13
#: Every BLACKLIST_STRIDE-th corpus entry runs against the blacklisting root (with and without -b).
BLACKLIST_STRIDE = 8
#: Modules blacklisted in the generated "corpus-blacklist" root: every n-th of the sorted names.
BLACKLIST_EVERY = 3


@dataclass(frozen=True)
class Suite:
    """Cases that share a fake root; `inputs` are extra paths whose content keys the cache."""

    name: str
    root: str
    cases: tuple[Case, ...]
    inputs: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Tree:
    """The module tree the suites run on (tests/kerneltree.KernelTree, duck-typed)."""

    root: str
    kver: str

    @property
    def moddir(self) -> str:
        return f"{self.root}/lib/modules/{self.kver}"

    def index_files(self) -> tuple[str, ...]:
        return tuple(sorted(os.path.join(self.moddir, n) for n in os.listdir(self.moddir)
                            if n.startswith("modules.")))


def module_files(tree: Tree) -> list[str]:
    """Relative paths of every module, in modules.dep order."""
    with open(os.path.join(tree.moddir, "modules.dep"), encoding="ascii") as f:
        return [line.split(":", 1)[0] for line in f if ":" in line]


def _base(tree: Tree) -> tuple[str, ...]:
    return ("modprobe", "-d", tree.root, "-S", tree.kver)


def make_empty_root(path: str) -> str:
    """A fake root with no configuration at all: an empty /proc/cmdline, an empty /sys/module."""
    write_tree(path, {"proc/cmdline": "", "sys/module/": ""})
    return path


def make_blacklist_root(path: str, tree: Tree) -> str:
    """A fake root whose /etc/modprobe.d blacklists every BLACKLIST_EVERY-th module."""
    names = sorted(os.path.basename(p).split(".", 1)[0] for p in module_files(tree))
    lines = [f"blacklist {n}" for n in names[::BLACKLIST_EVERY]]
    write_tree(path, {"proc/cmdline": "", "sys/module/": "",
                      "etc/modprobe.d/blacklist.conf": "\n".join(lines) + "\n"})
    return path


# --- the Debian tree with no configuration -------------------------------------------------------

def show_depends_all(tree: Tree, root: str) -> Suite:
    """`--show-depends` for every module of the tree, named as its file is (dashes kept)."""
    base = _base(tree)
    cases = [Case.of(*base, "--show-depends", os.path.basename(p).split(".", 1)[0])
             for p in module_files(tree)]
    return Suite("show-depends-all", root, tuple(cases), tree.index_files())


def module_variants(tree: Tree, root: str) -> Suite:
    """`-b`, `-i`, `-R`, `-n -v` and module arguments for a sample of the tree's modules."""
    base = _base(tree)
    cases = []
    for i, p in enumerate(module_files(tree)[::SAMPLE_STRIDE]):
        name = os.path.basename(p).split(".", 1)[0]
        norm = name.replace("-", "_")
        cases.append(Case.of(*base, "-b", "--show-depends", norm))
        cases.append(Case.of(*base, "-i", "--show-depends", name))
        cases.append(Case.of(*base, "-R", name))
        if i % 4 == 0:
            cases.append(Case.of(*base, "-n", "-v", norm))
            cases.append(Case.of(*base, "--show-depends", name, "a=1", "b=x y", "c='q r'",
                                 'd="d e"', "flag"))
    return Suite("module-variants", root, tuple(cases), tree.index_files())


def corpus_suites(tree: Tree, root: str, blacklist_root: str,
                  corpus: Sequence[Entry]) -> list[Suite]:
    """`-R` and `--show-depends` for every corpus string; a slice with a blacklist, with -b."""
    base = _base(tree)
    resolve = tuple(Case.of(*base, "-R", e.text) for e in corpus)
    show = tuple(Case.of(*base, "--show-depends", e.text) for e in corpus)
    sample = corpus[::BLACKLIST_STRIDE]
    black = tuple(c for e in sample for c in (
        Case.of(*base, "--show-depends", e.text),
        Case.of(*base, "-b", "--show-depends", e.text)))
    return [Suite("corpus-resolve", root, resolve, tree.index_files()),
            Suite("corpus-show-depends", root, show, tree.index_files()),
            Suite("corpus-blacklist", blacklist_root, black, tree.index_files())]


def elf_queries(tree: Tree, root: str) -> Suite:
    """`--show-exports` and `--show-modversions` (a path argument) for a sample of modules."""
    base = _base(tree)
    cases = []
    for p in module_files(tree)[::97]:
        path = os.path.join(tree.moddir, p)
        cases.append(Case.of(*base, "--show-exports", path))
        cases.append(Case.of(*base, "--show-modversions", path))
    cases.append(Case.of(*base, "--dump-modversions", os.path.join(tree.moddir,
                                                                   module_files(tree)[0])))
    cases.append(Case.of(*base, "--show-exports", "/nonexistent/mod.ko"))
    cases.append(Case.of(*base, "--show-modversions", os.path.join(tree.moddir, "modules.dep")))
    return Suite("elf-queries", root, tuple(cases), tree.index_files())


# --- configuration -------------------------------------------------------------------------------

def show_config(tree: Tree, empty_root: str) -> list[Suite]:
    """`-c` on the bare tree, with the quirks tree, and with -C files and directories."""
    base = _base(tree)
    c_file = os.path.join(QUIRKS_EXTRA, "c-file.conf")
    c_dir = os.path.join(QUIRKS_EXTRA, "c-dir")
    bare = (Case.of(*base, "-c"), Case.of(*base, "--showconfig"),
            Case.of(*base, "-c", "-C", "/nonexistent"))
    quirks = (
        Case.of(*base, "-c"),
        Case.of(*base, "--show-config"),
        Case.of(*base, "-c", "-C", c_file),
        Case.of(*base, "-c", "-C", c_dir),
        Case.of(*base, "-c", "-C", c_file, "-C", c_dir),
        Case.of(*base, "-c", "-C", c_dir, "-C", c_file),
        Case.of(*base, "-c", "-C", c_dir, "-C", "/nonexistent", "-C",
                os.path.join(QUIRKS_ROOT, "etc/modprobe.d")),
        Case.of(*base, "-c", f"--config={c_file}"),
        Case.of(*base, "-c", "-C", "/dev/null"),
        Case.of(*base, "-c", env={"MODPROBE_OPTIONS": f"-C {c_file}"}),
        Case.of(*base, "-c", "-q"),
        Case.of(*base, "-c", "e1000", "ignored-argument"),
    )
    return [Suite("config-bare", empty_root, bare, tree.index_files()),
            Suite("config-quirks", QUIRKS_ROOT, quirks, (*tree.index_files(), QUIRKS_ROOT))]


#: Lookup keys that exercise the quirks tree (see tests/data/modprobe.d-quirks/README.md).
QUIRK_KEYS = (
    # config alias patterns
    "quirk-star1", "quirk-star2", "quirk_star", "quirk-q1", "quirk-q", "quirk-q12",
    "quirk-range2", "quirk-range5", "quirk-neg5", "quirk-neg2", "quirk-caret7", "quirk-caret1",
    "quirk-class7", "quirk-alphaax", "quirk-upperclassA", "quirk-cls5", "quirk-cls[[:digit:]",
    "quirk-cls[5", "quirk-esc*", "quirk-escx", "quirk-esc\\*", "quirk-noesc", "quirk-noescabc",
    "quirk-br-x", "quirk_br_x", "quirk-br[-_]x", "quirk-empty[]", "quirk-empty", "quirk/x/y",
    "quirk/", "quirk.dot", "quirk-dot", "QUIRK-UPPER", "QUIRK_UPPER", "quirk-upper",
    "quirk-target", "quirk-dangling", "quirk-builtin", "quirk-chain", "quirk-extra",
    "quirk-short", "quirk-old-alias", "quirk-tab-alias", "quirk-\u00e9", "quirk-c-alias",
    # options, commands, softdeps, blacklist
    "quirk-opt1", "quirk-opt", "quirk-sd-first1", "quirk-sd-first2", "quirk-sd-install",
    "quirk-sd-empty", "quirk-install-only", "quirk-remove-only", "quirk-install-x",
    "quirk-cont", "e1000", "e1000e", "e100", "8139too", "8139cp", "pcnet32", "tulip", "mii",
    "usb-storage", "uas", "psmouse", "snd-hda-intel", "snd_hda_codec", "floppy", "pcspkr",
    "ext4", "btrfs", "cifs", "ksmbd", "parport", "parport_pc", "testmodule", "zswap",
    "PCNET32", "no-such-module", "quirk-crlf", "quirk_crlf\r",
    # device strings that meet the config (alias redirect, options by modalias key)
    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i01",
    "pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00",
    "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",
    "pci:v00001022d00002000sv00001AF4sd00001100bc02sc00i00",
)


def quirk_lookups(tree: Tree) -> Suite:
    """`-R`, `--show-depends`, `-b` and `-i` for every quirk key against the quirks tree."""
    base = _base(tree)
    cases: list[Case] = []
    for key in QUIRK_KEYS:
        cases += [Case.of(*base, "-R", key), Case.of(*base, "--show-depends", key),
                  Case.of(*base, "-b", "--show-depends", key),
                  Case.of(*base, "-i", "--show-depends", key)]
    cases += [
        Case.of(*base, "--show-depends", "e1000e", "a=1", "spaced=x y", "quoted='p q'",
                'dq="r s"', "=x", "noval"),
        Case.of(*base, "--show-depends", "psmouse", "rate=100"),
        Case.of(*base, "--show-depends", "quirk-opt9", "cmd=1"),
        Case.of(*base, "--show-depends", "e1000", "e1000=1"),
        Case.of(*base, "-i", "--show-depends", "e1000", "x=1"),
    ]
    return Suite("quirk-lookups", QUIRKS_ROOT, tuple(cases), (*tree.index_files(), QUIRKS_ROOT))


# --- flags, states and errors ---------------------------------------------------------------------

def flag_cases(tree: Tree) -> Iterator[Case]:
    """Flags, loaded states (the quirks tree's /sys/module), dry-run removal, errors."""
    base = _base(tree)
    yield from (
        Case.of(*base),
        Case.of(*base, "-a"),
        Case.of(*base, "-q"),
        Case.of(*base, "--show-depends"),
        Case.of(*base, "-a", "--show-depends", "e1000", "nope", "psmouse"),
        Case.of(*base, "-a", "-q", "--show-depends", "nope1", "nope2"),
        Case.of(*base, "-a", "-R", "quirk-star2", "nope", "e1000e"),
        Case.of(*base, "-a", "-b", "--show-depends", "8139cp", "uas", "e1000"),
        Case.of(*base, "nope"),
        Case.of(*base, "-q", "nope"),
        Case.of(*base, "-q", "-q", "nope"),
        Case.of(*base, "-n", "nope"),
        Case.of(*base, "-R", "nope"),
        Case.of(*base, "-R", "-q", "nope"),
        Case.of(*base, "--show-depends", "bad]alias"),
        Case.of(*base, "--show-depends", "bad[alias"),
        Case.of(*base, "--show-depends", ""),
        Case.of(*base, "--", "--show-depends"),
        Case.of(*base, "--show-depends", "--", "e1000"),
        Case.of(*base, "-n", "e1000e"),
        Case.of(*base, "-n", "-v", "e1000e"),
        # No -v -v: at INFO level libkmod logs a function pointer ("custom logging function
        # 0x55... registered"), which differs from run to run.
        Case.of(*base, "-nv", "usb-storage"),
        Case.of(*base, "-n", "-v", "psmouse"),
        Case.of(*base, "-n", "-v", "mii"),
        Case.of(*base, "-n", "-v", "8139too"),
        Case.of(*base, "-n", "-v", "snd-hda-intel"),
        Case.of(*base, "-n", "-v", "quirk-sd-first1"),
        Case.of(*base, "-n", "-v", "--first-time", "psmouse"),
        Case.of(*base, "-n", "-v", "--first-time", "e1000e"),
        Case.of(*base, "-n", "-v", "--first-time", "snd-hda-intel"),
        Case.of(*base, "-n", "-v", "--first-time", "pcnet32"),
        Case.of(*base, "-n", "-v", "--ignore-install", "e1000"),
        Case.of(*base, "-n", "-v", "-b", "quirk-star1"),
        Case.of(*base, "-n", "-v", "-b", "e1000"),
        Case.of(*base, "-n", "-v", "zswap"),
        Case.of(*base, "--show-depends", "zswap"),
        Case.of(*base, "--show-depends", "--first-time", "psmouse"),
        Case.of(*base, "-D", "e1000e"),
        Case.of(*base, "-r", "-n", "-v", "psmouse"),
        Case.of(*base, "-r", "-n", "-v", "8139too"),
        Case.of(*base, "-r", "-n", "-v", "mii"),
        Case.of(*base, "-r", "-n", "-v", "e1000"),
        Case.of(*base, "-r", "-n", "-v", "-i", "e1000"),
        Case.of(*base, "-r", "-n", "-v", "e1000e"),
        Case.of(*base, "-r", "-n", "-v", "snd-hda-intel"),
        Case.of(*base, "-r", "-n", "-v", "ext4"),
        Case.of(*base, "-r", "-n", "-v", "usb-storage"),
        Case.of(*base, "-r", "-n", "-v", "pcnet32"),
        Case.of(*base, "-r", "-n", "-v", "quirk-remove-only"),
        Case.of(*base, "-r", "-n", "-v", "--first-time", "pcnet32"),
        Case.of(*base, "-r", "-n", "-v", "--first-time", "psmouse"),
        Case.of(*base, "-r", "-n", "-v", "zswap"),
        Case.of(*base, "-r", "-n", "-v", "nope"),
        Case.of(*base, "-r", "-n", "-q", "nope"),
        Case.of(*base, "-r", "-a", "-n", "-v", "psmouse", "nope", "mii", "zswap"),
        Case.of(*base, "-r", "-n", "-v", "--remove-holders", "psmouse"),
        Case.of(*base, "-r", "-n", "-v", "--remove-dependencies", "8139too"),
        Case.of(*base, "-r", "-n", "-v", "-w", "100", "8139too"),
        Case.of(*base, "-r", "-n", "-v", "-w", "abc", "8139too"),
        Case.of(*base, "-r", "-n", "-v", "-w", "", "8139too"),
        Case.of(*base, "-r", "-n", "-v", "-f", "psmouse"),
        Case.of(*base, "-n", "-v", "-f", "e1000e"),
        Case.of(*base, "-n", "-v", "--force-vermagic", "--force-modversion", "e1000e"),
        Case.of(*base, "-Z"),
        Case.of(*base, "--bogus"),
        Case.of(*base, "-C"),
        Case.of(*base, "--show-depends", "-w"),
        Case.of(*base, "--first-time=1", "e1000"),
        Case.of(*base, "-h"),
        Case.of(*base, "--help"),
        Case.of("modprobe", "-S", tree.kver, "--show-depends", "e1000"),
        Case.of("modprobe", "-d", tree.root, "-S", "9.9.9", "e1000"),
        Case.of("modprobe", "-d", "/nonexistent", "-S", tree.kver, "-c"),
        Case.of("modprobe", "-d", tree.root + "/", "-S", tree.kver, "--show-depends", "mii"),
        Case.of("modprobe", "--dirname", tree.root, "--set-version", tree.kver,
                "--show-depends", "mii"),
        Case.of("modprobe", "--dirname=" + tree.root, "--set-version=" + tree.kver, "-R", "mii"),
    )
    env_cases = (
        {"MODPROBE_OPTIONS": "-b"},
        {"MODPROBE_OPTIONS": "-q"},
        {"MODPROBE_OPTIONS": "-n -v"},
        {"MODPROBE_OPTIONS": "--show-depends"},
        {"MODPROBE_OPTIONS": "  -b   -i  "},
        {"MODPROBE_OPTIONS": "-i 'x'"},
        {"MODPROBE_OPTIONS": '"-b" \'-i\''},
        {"MODPROBE_OPTIONS": "-C '/nonexistent dir'"},
        {"MODPROBE_OPTIONS": "-Z"},
        {"MODPROBE_OPTIONS": ""},
        {"KMOD_LOG": "err"},
        {"KMOD_LOG": "3"},
        {"KMOD_LOG": "emerg"},
        {"KMOD_LOG": "0"},
    )
    for env in env_cases:
        yield Case.of(*base, "--show-depends", "quirk-star1", env=env)
        yield Case.of(*base, "-R", "nope", env=env)
    yield Case.of(*base, "e1000e", "x=1", env={"MODPROBE_OPTIONS": "--show-depends"})
    yield Case.of(*base, "-c", env={"MODPROBE_OPTIONS": "-c", "KMOD_LOG": "emerg"})


def flags(tree: Tree, empty_root: str) -> list[Suite]:
    cases = tuple(flag_cases(tree))
    return [Suite("flags-quirks", QUIRKS_ROOT, cases, (*tree.index_files(), QUIRKS_ROOT)),
            Suite("flags-bare", empty_root, cases, tree.index_files())]
