"""core.kmod.index: the five `.bin` files of a tree the real depmod indexed, opened with
open_indexes and read by both readers (RawIndexes, ModuleIndex); what a missing, empty or
damaged file gives (IndexProblem, IndexFileError).

The text files depmod writes beside the indexes (modules.dep) and the real modprobe (`-R`,
`-c`) are the reference for the answers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kmodd.core.kmod.binindex import INDEX_MAGIC, IndexFileError
from kmodd.core.kmod.config import Config
from kmodd.core.kmod.index import (
    INDEX_FILES,
    IndexProblem,
    ModuleIndex,
    RawIndexes,
    open_indexes,
)
from kmodd.core.kmod.normalize import path_to_modname
from kmodd.core.kmod.resolve import Resolver
from tests.core.kmod.realkmod import MODDIR, TreeView, index_files, make_tree, modprobe
from tests.daemon.daemon_tree import KVER
from tests.toolrun import needs_mount_namespace

READERS = ("raw", "raw-kept", "decoded")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("index"))


def reader(kind: str, files: dict[str, bytes | None]) -> RawIndexes | ModuleIndex:
    bins, problems = open_indexes(MODDIR, files)
    assert problems == []
    if kind == "decoded":
        return ModuleIndex(MODDIR, bins)
    return RawIndexes(MODDIR, bins, keep_subtrees=kind == "raw-kept")


def path_of(name: str) -> str:
    return f"{MODDIR}/{name}"


def test_every_index_the_real_depmod_wrote_opens_without_a_problem(tree: Path) -> None:
    bins, problems = open_indexes(MODDIR, index_files(tree))
    assert problems == []
    assert {role: ix.path for role, ix in bins.items()} == {
        role: path_of(name) for role, name in INDEX_FILES.items()}
    assert {ix.version >> 16 for ix in bins.values()} == {2}


@pytest.mark.parametrize("kind", READERS)
def test_each_module_s_dependency_line_is_its_modules_dep_line(tree: Path, kind: str) -> None:
    indexes = reader(kind, index_files(tree))
    text = (tree / MODDIR.lstrip("/") / "modules.dep").read_text().splitlines()
    assert len(text) == 6
    for line in text:
        name = path_to_modname(line.split(":", 1)[0])
        assert name is not None
        assert indexes.dep_line(name) == line
    assert indexes.dep_line("kmodd_none") is None


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize(("method", "key", "answer"), [
    ("aliases", "kmodd:shared", ["kmodd_dev", "kmodd_other"]),
    ("aliases", "kmodd:dev-1", ["kmodd_dev"]),
    ("aliases", "kmodd:bus", ["kmodd_bus"]),
    ("aliases", "kmodd:none", []),
    ("symbols", "symbol:bus_sym", ["kmodd_bus"]),
    ("symbols", "symbol:none", []),
    ("builtin", "kmodd_rtc", True),
    ("builtin", "kmodd_dev", False),
    ("builtin_aliases", "platform:rtc_cmos", ["kmodd_rtc"]),
    ("builtin_aliases", "platform:none", []),
])
def test_both_readers_answer_every_lookup_alike(tree: Path, kind: str, method: str, key: str,
                                                answer: object) -> None:
    assert getattr(reader(kind, index_files(tree)), method)(key) == answer


@pytest.mark.parametrize("kind", READERS)
@needs_mount_namespace
def test_the_dump_is_the_index_part_of_the_real_modprobe_c(tree: Path, kind: str) -> None:
    indexes = reader(kind, index_files(tree))
    real = modprobe(tree, "-c").stdout
    dumped = real.split("# End of configuration files. Dumping indexes now:\n\n", 1)[1]
    ours = [f"alias {k} {v}" for role in ("alias", "symbols") for k, v in indexes.dump(role)]
    assert ours == dumped.splitlines()
    assert len(ours) == 6


def test_the_decoded_index_counts_the_modules_of_modules_dep(tree: Path) -> None:
    bins, _ = open_indexes(MODDIR, index_files(tree))
    assert ModuleIndex(MODDIR, bins).module_count() == 6
    del bins["dep"]
    assert ModuleIndex(MODDIR, bins).module_count() == 0


# -- missing, empty, damaged ------------------------------------------------------------------

@pytest.mark.parametrize("kind", READERS)
def test_a_missing_index_answers_none_and_dumps_nothing(tree: Path, kind: str) -> None:
    files: dict[str, bytes | None] = {name: None for name in INDEX_FILES.values()}
    indexes = reader(kind, files)
    assert (indexes.dep_line("kmodd_dev"), indexes.aliases("kmodd:shared"),
            indexes.symbols("symbol:bus_sym"), indexes.builtin("kmodd_rtc"),
            indexes.builtin_aliases("platform:rtc_cmos"), indexes.dump("alias")) == (
        None, None, None, None, None, [])


@pytest.mark.parametrize(("key", "found"), [("platform:rtc_cmos", ["kmodd_rtc"]),
                                            ("kmodd:shared", []), ("kmodd-dev", ["kmodd_dev"])])
@needs_mount_namespace
def test_the_lookup_moves_on_past_a_missing_index_as_the_real_modprobe_does(
        tree: Path, tmp_path: Path, key: str, found: list[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy, symlinks=True)
    (copy / MODDIR.lstrip("/") / "modules.alias.bin").unlink()
    files = index_files(copy)
    bins, problems = open_indexes(MODDIR, files)
    assert (sorted(bins), problems) == (["builtin", "builtin_alias", "dep", "symbols"], [])
    r = Resolver(RawIndexes(MODDIR, bins), Config(), TreeView(copy))
    assert [m.name for m in r.lookup(key)] == modprobe(copy, "-R", key).stdout.split() == found


def with_file(tree: Path, name: str, data: bytes) -> dict[str, bytes | None]:
    files = index_files(tree)
    files[name] = data
    return files


@pytest.mark.parametrize(("data", "offset", "reason", "kind", "found"), [
    (b"", 0, "file is 0 bytes, shorter than the header", "short", 0),
    (b"\xb0\x07\xf4\x57\x00\x02", 0, "file is 6 bytes, shorter than the header", "short", 0),
    (b"\x00\x00\x00\x00" + bytes(8), 0,
     f"bad magic 0x00000000 (an index starts with {INDEX_MAGIC:#010x})", "magic", 0),
    (b"\xde\xad\xbe\xef" + bytes(8), 0,
     f"bad magic 0xdeadbeef (an index starts with {INDEX_MAGIC:#010x})", "magic", 0xDEADBEEF),
    (b"\xb0\x07\xf4\x57\x00\x03\x00\x01" + bytes(4), 4, "unsupported index version 3.1",
     "version", 3),
])
def test_a_file_with_a_bad_header_is_a_problem_and_the_others_still_open(
        tree: Path, data: bytes, offset: int, reason: str, kind: str, found: int) -> None:
    bins, problems = open_indexes(MODDIR, with_file(tree, "modules.alias.bin", data))
    path = path_of("modules.alias.bin")
    assert problems == [IndexProblem("alias", path, offset, reason, kind, found)]
    assert str(problems[0]) == f"{path}: offset {offset:#x}: {reason}"
    assert sorted(bins) == ["builtin", "builtin_alias", "dep", "symbols"]


def test_an_empty_builtin_alias_index_is_skipped_as_kmod_skips_it(tree: Path) -> None:
    bins, problems = open_indexes(MODDIR, with_file(tree, "modules.builtin.alias.bin", b""))
    assert ("builtin_alias" in bins, problems) == (False, [])
    bins, problems = open_indexes(MODDIR, with_file(tree, "modules.builtin.bin", b""))
    assert ("builtin" in bins, [p.kind for p in problems]) == (False, ["short"])


@pytest.mark.parametrize("name", ["modules.builtin.bin", "modules.builtin.alias.bin"])
def test_an_empty_builtin_index_is_no_index_when_its_source_is_missing_and_damage_when_not(
        tree: Path, name: str) -> None:
    source = {"modules.builtin.bin": "modules.builtin",
              "modules.builtin.alias.bin": "modules.builtin.modinfo"}[name]
    role = {"modules.builtin.bin": "builtin", "modules.builtin.alias.bin": "builtin_alias"}[name]
    files = with_file(tree, name, b"")
    bins, problems = open_indexes(MODDIR, files, sources=frozenset({"modules.dep"}))
    assert (role in bins, problems) == (False, [])
    bins, problems = open_indexes(MODDIR, files, sources=frozenset({source}))
    assert role not in bins
    assert problems == [IndexProblem(
        role, path_of(name), 0, f"the file is empty, but {source} is present (depmod writes "
        "an index from it): a damaged or unfinished write", "short")]


def test_the_real_depmod_writes_empty_builtin_indexes_without_their_sources(
        tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy, symlinks=True)
    moddir = copy / MODDIR.lstrip("/")
    (moddir / "modules.builtin").unlink()
    (moddir / "modules.builtin.modinfo").unlink()
    subprocess.run(["depmod", "-b", str(copy), "-C", str(copy / ".depmod.d"), KVER],
                   check=True, capture_output=True)
    files = index_files(copy)
    assert (files["modules.builtin.bin"], files["modules.builtin.alias.bin"]) == (b"", b"")
    sources = frozenset(p.name for p in moddir.iterdir())
    bins, problems = open_indexes(MODDIR, files, sources=sources)
    assert (sorted(bins), problems) == (["alias", "dep", "symbols"], [])


def test_damage_past_the_header_opens_and_is_found_when_read(tree: Path) -> None:
    good = index_files(tree)["modules.dep.bin"]
    assert good is not None
    bins, problems = open_indexes(MODDIR, with_file(tree, "modules.dep.bin", good[:13]))
    assert problems == []
    with pytest.raises(IndexFileError) as caught:
        RawIndexes(MODDIR, bins).dep_line("kmodd_dev")
    assert (caught.value.path, caught.value.kind) == (path_of("modules.dep.bin"), "structure")
    with pytest.raises(IndexFileError):
        ModuleIndex(MODDIR, bins).module_count()


def test_the_decoded_index_reads_its_decoded_files_whole_when_built(tree: Path) -> None:
    good = index_files(tree)["modules.alias.bin"]
    assert good is not None
    bins, problems = open_indexes(MODDIR, with_file(tree, "modules.alias.bin",
                                                    good[: len(good) - 8]))
    assert problems == []
    with pytest.raises(IndexFileError) as caught:
        ModuleIndex(MODDIR, bins)
    assert caught.value.path == path_of("modules.alias.bin")
