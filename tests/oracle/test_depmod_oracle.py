"""kmodd's depmod on the real Debian 6.1 kernel tree (4023 modules), against kmod 30.

* Every file kmodd writes is byte-identical to what kmod 30's depmod wrote for the same
  tree: for the modules as shipped (.ko), and for copies compressed with xz and with zstd.
  That includes modules.symbols, whose order kmod takes from its symbol hash table: kmodd
  reproduces the hash and its iteration order, so no file needs a looser comparison.
* The real modprobe answers the same on kmodd's index as on kmod's: `-R` for a sample of
  concrete modaliases (built from modules.alias) and `--show-depends` for every module.
* kmodd's ELF reader agrees with pyelftools on every module of the tree.

kmodd runs with `-o`, so the kmod-built trees stay as kmod wrote them.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from kmodd.cli.depmod import run as kmodd_depmod
from kmodd.system.root import Root
from tests.scenarios_depmod.debian_trees import DepmodTree, depmod_tree

pytestmark = pytest.mark.oracle

OUTPUTS = (
    "modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin",
    "modules.softdep", "modules.symbols", "modules.symbols.bin", "modules.builtin.bin",
    "modules.builtin.alias.bin", "modules.devname",
)
#: One alias in this many is turned into a modalias for `modprobe -R`.
ALIAS_SAMPLE_STEP = 10


def _kmodd_index(tree: DepmodTree, outdir: str) -> tuple[int, bytes]:
    err = io.BytesIO()
    rc = kmodd_depmod(["depmod", "-b", tree.basedir, "-o", outdir, tree.kver], root=Root(),
                      stdout=io.BytesIO(), stderr=err, environ={})
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """kmodd's index directory for each tree kind, built once."""
    built: dict[str, str] = {}

    class Lazy(dict[str, str]):
        def __missing__(self, kind: str) -> str:
            tree = depmod_tree(kind)
            out = str(tmp_path_factory.mktemp(f"kmodd-{kind}"))
            rc, err = _kmodd_index(tree, out)
            assert (rc, err) == (0, b"")
            built[kind] = f"{out}/lib/modules/{tree.kver}"
            return built[kind]

    yield Lazy()


@pytest.mark.parametrize("kind", ["plain", "xz", "zstd"])
def test_every_file_is_byte_identical_to_kmods(kind: str, indexes: dict[str, str]) -> None:
    tree = depmod_tree(kind)
    ours = indexes[kind]
    assert sorted(n for n in os.listdir(ours)) == sorted(OUTPUTS)
    for name in OUTPUTS:
        with open(f"{tree.moddir}/{name}", "rb") as a, open(f"{ours}/{name}", "rb") as b:
            assert b.read() == a.read(), f"{kind}: {name} differs"


def _modprobe(basedir: str, kver: str, *args: str) -> str:
    proc = subprocess.run(["modprobe", "-d", basedir, "-S", kver, *args], capture_output=True,
                          check=False)
    text = (proc.stdout + b"--- stderr\n" + proc.stderr).decode()
    return text.replace(basedir, "<base>") + f"--- exit {proc.returncode}\n"


def _tree_on_kmodd_index(tree: DepmodTree, index: str, tmp: str) -> str:
    """A basedir whose module directory holds kmodd's index and links to the modules."""
    moddir = f"{tmp}/lib/modules/{tree.kver}"
    os.makedirs(moddir)
    for name in os.listdir(index):
        os.symlink(f"{index}/{name}", f"{moddir}/{name}")
    os.symlink(f"{tree.moddir}/kernel", f"{moddir}/kernel")
    return tmp


def _concrete(pattern: str) -> str:
    """A string the alias pattern matches: `*` empty, `?` a digit, `[..]` its first char."""
    out = re.sub(r"\[!?([^\]])[^\]]*\]", lambda m: m.group(1), pattern)
    return out.replace("*", "").replace("?", "0")


def test_modprobe_resolves_modaliases_the_same_on_kmodds_index(indexes: dict[str, str],
                                                                tmp_path) -> None:
    tree = depmod_tree("plain")
    base = _tree_on_kmodd_index(tree, indexes["plain"], str(tmp_path))
    with open(f"{tree.moddir}/modules.alias") as f:
        patterns = [line.split()[1] for line in f if line.startswith("alias ")]
    queries = [_concrete(p) for p in patterns[::ALIAS_SAMPLE_STEP]]
    queries += ["nonexistent-alias", "symbol:usb_register_driver", "fs-ext4", "net-pf-10"]
    assert len(queries) > 2500
    kmod = _modprobe(tree.basedir, tree.kver, "-a", "-R", *queries)
    ours = _modprobe(base, tree.kver, "-a", "-R", *queries)
    resolved = ours.split("--- stderr")[0].splitlines()
    assert len(resolved) >= len(queries) - 10  # nearly every sample resolves to a module
    assert ours == kmod


def test_modprobe_shows_the_same_dependencies_for_every_module(indexes: dict[str, str],
                                                               tmp_path) -> None:
    tree = depmod_tree("plain")
    base = _tree_on_kmodd_index(tree, indexes["plain"], str(tmp_path))
    with open(f"{tree.moddir}/modules.order") as f:
        names = [line.rsplit("/", 1)[1].split(".")[0] for line in f if line.strip()]
    assert len(names) == 4023
    kmod = _modprobe(tree.basedir, tree.kver, "-a", "--show-depends", *names)
    ours = _modprobe(base, tree.kver, "-a", "--show-depends", *names)
    assert ours.count("insmod ") > 4023
    assert ours == kmod


@pytest.mark.slow
def test_the_elf_reader_agrees_with_pyelftools_on_every_module() -> None:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    from kmodd.core.modfile.elf import ElfError, parse_module

    tree = depmod_tree("plain")
    checked = 0
    for directory, _, files in os.walk(f"{tree.moddir}/kernel"):
        for name in files:
            path = f"{directory}/{name}"
            with open(path, "rb") as f:
                data = f.read()
            ours = parse_module(data, path)
            elf = ELFFile(io.BytesIO(data))
            symtab = elf.get_section_by_name(".symtab")
            assert isinstance(symtab, SymbolTableSection)
            symbols = list(symtab.iter_symbols())
            undefined = [(s.name, s["st_info"]["bind"] == "STB_WEAK") for s in symbols[1:]
                         if s["st_shndx"] == "SHN_UNDEF" and s.name]
            needed = ours.needed_symbols()
            assert [(n.name, n.weak) for n in needed[: len(undefined)]] == undefined, path
            crc_names = [s.name[len("__crc_"):] for s in symbols if
                         s.name.startswith("__crc_")]
            try:
                exports = [n for n, _ in ours.export_pairs()]
            except ElfError:
                exports = []
            if crc_names:
                assert exports == crc_names, path
            else:
                strings = elf.get_section_by_name("__ksymtab_strings")
                expected = [s.decode() for s in strings.data().split(b"\0") if s] \
                    if strings is not None else []
                assert exports == expected, path
            modinfo = elf.get_section_by_name(".modinfo")
            assert modinfo is not None
            assert ours.strings(".modinfo") == [
                s.decode("latin-1") for s in modinfo.data().split(b"\0") if s], path
            versions = elf.get_section_by_name("__versions")
            if versions is not None:
                raw = versions.data()
                records = [(int.from_bytes(raw[i : i + 8], "little"),
                            raw[i + 8 : i + 64].split(b"\0", 1)[0].decode())
                           for i in range(0, len(raw), 64)]
                assert [(v.crc, v.name) for v in ours.versions()] == records, path
                # needs no undefined symbol claimed come last, with their own CRC
                claimed = {name for name, _ in undefined}
                assert [(n.crc, n.name) for n in needed[len(undefined) :]] == [
                    r for r in records if r[1] not in claimed], path
            checked += 1
    assert checked == 4023
