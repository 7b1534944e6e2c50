"""`kmodctl explain` on files that are not modules: a clear finding, never a traceback.

A real module (with symbols, versions, parameters and a signature block) is cut short at
any length, has bytes overwritten anywhere, or is replaced by bytes that are not ELF at all,
compressed garbage included; the explanation must still come, and when the file cannot be
read as a module it must say so naming the file (and the offset where the ELF reader
stopped).
"""

from __future__ import annotations

import lzma
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodd.core.explain.model import Check, Verdict
from kmodd.system.diagnose import explain
from kmodd.system.root import Root
from tests.fakes import DEBIAN_RELEASE
from tests.kobuild import KoSpec, build_ko
from tests.kofixtures import append_signature, standard_modinfo

MODDIR = f"/lib/modules/{DEBIAN_RELEASE}"
GOOD = append_signature(build_ko(KoSpec(
    "mod_a", modinfo=standard_modinfo("mod_a", "parmtype=x:int"), exports=["a_fn"],
    export_crcs={"a_fn": 7}, needs=["printk", "b_fn"], weak_needs=["c_fn"],
    versions=[(1, "module_layout"), (2, "printk")])), b"\x30\x03\x02\x01\x00",
    signer=b"", key_id=b"")
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def explain_bytes(directory: str, data: bytes, name: str = "mod-a.ko"):
    """Explain `/<name>` in a root of its own that holds nothing else."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
    path = f"/{name}"
    return path, explain(path, root=Root(directory), moddir=MODDIR, read_log=False)


def check_file_finding(path: str, expl) -> None:
    files = [f for f in expl.findings if f.check is Check.FILE]
    assert len(files) == 1
    finding = files[0]
    if finding.verdict is Verdict.PROBLEM:
        assert finding.summary.startswith("the file is not a usable module: ")
        assert [e.path for e in finding.evidence] == [path]
    else:
        assert finding.verdict is Verdict.OK


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(GOOD)))
def test_a_module_cut_short_anywhere_is_explained(tmp_path_factory, cut):
    path, expl = explain_bytes(str(tmp_path_factory.mktemp("cut")), GOOD[:cut])
    check_file_finding(path, expl)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=len(GOOD) - 1),
                                st.integers(min_value=0, max_value=255)), min_size=1,
                      max_size=8))
def test_a_module_with_bytes_overwritten_anywhere_is_explained(tmp_path_factory, edits):
    data = bytearray(GOOD)
    for at, value in edits:
        data[at] = value
    path, expl = explain_bytes(str(tmp_path_factory.mktemp("flip")), bytes(data))
    check_file_finding(path, expl)


@FUZZ
@given(data=st.binary(max_size=512))
def test_any_bytes_are_explained(tmp_path_factory, data):
    path, expl = explain_bytes(str(tmp_path_factory.mktemp("any")), data)
    check_file_finding(path, expl)


def test_a_file_that_is_not_elf_names_the_file_and_offset_0(tmp_path):
    path, expl = explain_bytes(str(tmp_path), b"#!/bin/sh\necho not a module\n")
    finding = next(f for f in expl.findings if f.check is Check.FILE)
    assert finding.summary == ("the file is not a usable module: not an ELF file (bad magic "
                               "or too short)")
    assert finding.evidence[0].where() == f"{path} at offset 0x0"


def test_a_truncated_header_table_names_where_it_runs_out(tmp_path):
    _path, expl = explain_bytes(str(tmp_path), GOOD[:200])
    finding = next(f for f in expl.findings if f.check is Check.FILE)
    assert finding.verdict is Verdict.PROBLEM
    assert "section headers run past the end of the file" in finding.summary


def test_compressed_garbage_says_it_cannot_be_decompressed(tmp_path):
    xz = lzma.compress(GOOD)
    _path, expl = explain_bytes(str(tmp_path), xz[: len(xz) // 2], "mod-a.ko.xz")
    finding = next(f for f in expl.findings if f.check is Check.FILE)
    assert finding.summary.startswith("the file is not a usable module: cannot decompress it: ")


def test_a_good_module_by_path_reads_as_one(tmp_path):
    _path, expl = explain_bytes(str(tmp_path), GOOD)
    finding = next(f for f in expl.findings if f.check is Check.FILE)
    assert finding.verdict is Verdict.OK
    assert expl.modules == ("mod_a",)
