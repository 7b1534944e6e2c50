"""Damaged module files: modinfo never raises, and says what the real modinfo says."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodd.cli.modinfo import ModinfoData, read_module_info
from tests.kofixtures import make_signing_key, sign_module, standard_modinfo, write_module
from tests.toolrun import kmodd_tool, real_tool


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    path = write_module(str(directory), "fuzz_mod",
                        modinfo=standard_modinfo("fuzz_mod", "parmtype=a:int", "parm=a:An int"),
                        exports=["f1"], needs=["printk"], kernel_crcs={"printk": 1},
                        layout_crc=2)
    with open(path, "rb") as f:
        return sign_module(f.read(), make_signing_key(str(directory)))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_or_corrupted_modules_give_data_or_an_errno(tmp_path, signed, data):
    image = bytearray(signed)
    for _ in range(data.draw(st.integers(0, 6))):
        image[data.draw(st.integers(0, len(image) - 1))] = data.draw(st.integers(0, 255))
    image = image[:data.draw(st.integers(0, len(image)))]
    path = tmp_path / "fuzz.ko"
    path.write_bytes(bytes(image))
    result = read_module_info(str(path))
    assert isinstance(result, ModinfoData | int)


@pytest.mark.oracle
def test_truncations_at_every_64_bytes_match_the_real_modinfo(tmp_path, signed):
    paths = []
    for n, cut in enumerate(range(0, len(signed), 64)):
        path = tmp_path / f"cut{n}.ko"
        path.write_bytes(signed[:cut])
        paths.append(str(path))
    ours, real = kmodd_tool(["modinfo", *paths]), real_tool(["modinfo", *paths])
    assert ours == real


#: e_shstrndx: kmod 30 asserts (and aborts) on a section-name index past the table.
SHSTRNDX = (62, 63)


@pytest.mark.oracle
def test_header_corruptions_match_the_real_modinfo(tmp_path, signed):
    paths = []
    for pos in (p for p in range(64) if p not in SHSTRNDX):  # the ELF header, byte by byte
        image = bytearray(signed)
        image[pos] ^= 0xFF
        path = tmp_path / f"hdr{pos}.ko"
        path.write_bytes(bytes(image))
        paths.append(str(path))
    ours, real = kmodd_tool(["modinfo", *paths]), real_tool(["modinfo", *paths])
    assert ours == real


@pytest.mark.oracle
def test_a_bad_section_name_index_is_an_error_where_kmod_aborts(tmp_path, signed):
    image = bytearray(signed)
    image[SHSTRNDX[0]] ^= 0xFF
    path = tmp_path / "shstrndx.ko"
    path.write_bytes(bytes(image))
    real = real_tool(["modinfo", str(path)])
    assert real.rc < 0 and b"Assertion" in real.err
    ours = kmodd_tool(["modinfo", str(path)])
    assert (ours.rc, ours.err) == (
        1, b"modinfo: ERROR: could not get modinfo from 'shstrndx': Invalid argument\n")
