"""modinfo on module files: every output form compared with the real modinfo (kmod 30)."""

import gzip
import lzma
import subprocess

import pytest

from tests.kofixtures import make_signing_key, sign_module, standard_modinfo, write_module
from tests.toolrun import kmodd_tool, real_tool

PARAMS = [
    "parm=debug:Debug level (0-3)", "parmtype=debug:int",
    "parmtype=mode:charp",
    "parm=name:Name only, no type",
    "parmtype=debug:uint",  # a second type for the same name: the last one wins
    "parm=mode:Operating mode",
]


@pytest.fixture
def ko(tmp_path):
    info = standard_modinfo("demo_mod", "author=First Author", "author=Second Author",
                            "description=A demo module", "alias=pci:v00008086d*",
                            "alias=demo-alias", *PARAMS, "firmware=demo/fw.bin",
                            "flag_without_value")
    return write_module(str(tmp_path), "demo_mod", modinfo=info)


def both(args, **kw):
    ours, real = kmodd_tool(["modinfo", *args]), real_tool(["modinfo", *args], **kw)
    return ours, real


@pytest.mark.parametrize("options", [
    [], ["-F", "parm"], ["-p"], ["-a"], ["-d"], ["-l"], ["-n"], ["-0"], ["-0", "-F", "parm"],
    ["-F", "author"], ["-F", "alias"], ["-F", "nothing"], ["-F", "filename"], ["--field=name"],
    ["-F", "flag_without_value"], ["-0", "-a"], ["-F", "vermagic"],
])
def test_output_forms_match_the_real_modinfo(ko, options):
    ours, real = both([*options, ko])
    assert ours == real


def test_default_output_lists_filename_first_then_modinfo_then_parameters_newest_first(ko):
    out = kmodd_tool(["modinfo", ko]).out.decode()
    lines = out.splitlines()
    assert lines[0] == f"filename:       {ko}"
    assert lines[-3:] == [
        "parm:           name:Name only, no type",
        "parm:           mode:Operating mode (charp)",
        "parm:           debug:Debug level (0-3) (uint)",
    ]
    assert "flag_without_value:" in out  # a string without '=' is a key with no value


@pytest.mark.parametrize("key", ["k" * 14, "k" * 15, "k" * 16, "k" * 17, "k" * 31])
def test_keys_of_any_length_are_padded_like_printf_does(tmp_path, key):
    path = write_module(str(tmp_path), "keys", modinfo=[f"{key}=value", "name=keys"])
    ours, real = both([path])
    assert ours == real


def test_parameter_without_colon_is_reported_and_skipped(tmp_path):
    path = write_module(str(tmp_path), "badparm",
                        modinfo=["parm=nocolon", "parmtype=ok:int", "name=badparm"])
    for options in ([], ["-p"]):
        ours, real = both([*options, path])
        assert ours == real
        assert ours.err == b'modinfo: ERROR: Found invalid "parm=nocolon": missing \':\'\n'


def test_signature_fields_follow_modinfo_and_precede_parameters(tmp_path, ko):
    key = make_signing_key(str(tmp_path / "keys"))
    with open(ko, "rb") as f:
        signed = sign_module(f.read(), key)
    path = tmp_path / "signed.ko"
    path.write_bytes(signed)
    for options in ([], ["-0"], ["-F", "signature"], ["-F", "sig_key"]):
        ours, real = both([*options, str(path)])
        assert ours == real


@pytest.mark.parametrize("suffix,compress", [(".ko.xz", lzma.compress),
                                             (".ko.zst", None)])
def test_compressed_modules_are_read_decompressed(tmp_path, ko, suffix, compress):
    with open(ko, "rb") as f:
        data = f.read()
    path = tmp_path / f"demo{suffix}"
    if compress is None:
        path.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=data, check=True,
                                        capture_output=True).stdout)
    else:
        path.write_bytes(compress(data))
    ours, real = both([str(path)])
    assert ours == real and ours.rc == 0


def test_gzip_data_is_not_decompressed_by_debians_kmod(tmp_path, ko):
    with open(ko, "rb") as f:
        (tmp_path / "gz.ko").write_bytes(gzip.compress(f.read()))
    ours, real = both([str(tmp_path / "gz.ko")])
    assert ours == real
    assert ours.err == b"modinfo: ERROR: could not get modinfo from 'gz': Exec format error\n"


@pytest.mark.parametrize("content,message", [
    (b"not an elf file at all", b"Exec format error"),
    (b"\x7fEL", b"Invalid argument"),
    (b"\xfd7zXZ\x00 corrupt xz data", b"Invalid argument"),
])
def test_unreadable_files_give_kmods_error_after_the_filename_line(tmp_path, content, message):
    path = tmp_path / "broken.ko"
    path.write_bytes(content)
    ours, real = both([str(path)])
    assert ours == real
    assert ours.rc == 1
    assert ours.out == b"filename:       " + str(path).encode() + b"\n"
    assert ours.err == b"modinfo: ERROR: could not get modinfo from 'broken': " + message + b"\n"


def test_elf_without_modinfo_section(tmp_path):
    from tests.kobuild import KoSpec, build_ko

    data = build_ko(KoSpec(name="x"))
    # Rename .modinfo so that the section is missing but the file stays valid ELF.
    data = data.replace(b".modinfo\0", b".modinfX\0")
    path = tmp_path / "nomodinfo.ko"
    path.write_bytes(data)
    ours, real = both([str(path)])
    assert ours == real


def test_relative_paths_are_made_absolute_from_pwd(tmp_path, ko, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"PWD": str(tmp_path)}
    ours = kmodd_tool(["modinfo", "-n", "./demo-mod.ko"], environ=env)
    real = real_tool(["modinfo", "-n", "./demo-mod.ko"], cwd=str(tmp_path), env=env)
    assert ours == real
    assert ours.out == f"{tmp_path}/./demo-mod.ko\n".encode()


def test_several_files_print_in_order_and_any_failure_fails_the_run(tmp_path, ko):
    bad = tmp_path / "bad.ko"
    bad.write_bytes(b"garbage!")
    ours, real = both([ko, str(bad), ko])
    assert ours == real
    assert ours.rc == 1


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"], ["-V"], ["--version"], ["-x"],
                                  ["--f", "x"], ["-F"], ["--field"], ["--help=1"],
                                  ["--nonsense"]])
def test_options_and_their_errors_match_the_real_modinfo(argv):
    ours, real = both(argv)
    assert ours == real
