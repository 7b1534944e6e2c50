"""The appended module signature, read as kmod 30 (built with OpenSSL) reads it."""

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodd.core.modfile.signature import (
    NoSignature,
    SignatureError,
    SignatureInfo,
    hex_colon,
    modinfo_fields,
    parse_module_signature,
)
from tests.kofixtures import (
    append_signature,
    make_signing_key,
    pkcs7_signature,
    sign_module,
    standard_modinfo,
    write_module,
)
from tests.toolrun import kmodd_tool, real_tool

SIG_FIELDS = ("sig_id", "signer", "sig_key", "sig_hashalgo", "signature")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def key(keydir):
    return make_signing_key(keydir, "/CN=kmodd test key/O=kmodd", 0x1234ABCD)


@pytest.fixture(scope="module")
def module_bytes(tmp_path_factory):
    path = write_module(str(tmp_path_factory.mktemp("mod")), "signed_mod",
                        modinfo=standard_modinfo("signed_mod"))
    with open(path, "rb") as f:
        return f.read()


def rsa_signature(data, key, digest):
    return subprocess.run(["openssl", "dgst", f"-{digest}", "-sign", key.key], input=data,
                          check=True, capture_output=True).stdout


def test_no_marker_means_no_signature(module_bytes):
    assert isinstance(parse_module_signature(module_bytes), NoSignature)
    assert isinstance(parse_module_signature(b""), NoSignature)


def test_pkcs7_signature_gives_issuer_cn_serial_digest_and_rsa_signature(module_bytes, key):
    info = parse_module_signature(sign_module(module_bytes, key, "sha256"))
    assert info == SignatureInfo(
        id_type="PKCS#7", signer=b"kmodd test key", key_id=bytes.fromhex("1234ABCD"),
        hash_algo="sha256", signature=rsa_signature(module_bytes, key, "sha256"))


@pytest.mark.parametrize("digest", ["sha1", "sha224", "sha256", "sha384", "sha512"])
def test_digest_algorithm_names_are_kmods(module_bytes, key, digest):
    info = parse_module_signature(sign_module(module_bytes, key, digest))
    assert isinstance(info, SignatureInfo) and info.hash_algo == digest


def test_serial_with_the_high_bit_set_loses_its_der_sign_byte(module_bytes, keydir):
    key = make_signing_key(keydir, "/CN=high", 0x80FF)
    info = parse_module_signature(sign_module(module_bytes, key))
    assert isinstance(info, SignatureInfo) and info.key_id == b"\x80\xff"


def test_without_a_common_name_the_last_name_entry_is_the_signer(module_bytes, keydir):
    key = make_signing_key(keydir, "/O=Org/OU=Unit", 7)
    info = parse_module_signature(sign_module(module_bytes, key))
    assert isinstance(info, SignatureInfo) and info.signer == b"Unit"


def test_non_pkcs7_signatures_take_signer_and_key_from_the_header_layout(module_bytes):
    data = append_signature(module_bytes, b"\x01\x02\x03", id_type=1, algo=1, hash_=4,
                            signer=b"Old signer", key_id=b"\xab\xcd")
    assert parse_module_signature(data) == SignatureInfo(
        id_type="X509", signer=b"Old signer", key_id=b"\xab\xcd", hash_algo="sha256",
        signature=b"\x01\x02\x03", algo="RSA")


def test_header_numbers_out_of_range_mean_no_signature(module_bytes):
    data = append_signature(module_bytes, b"\x30\x00", hash_=9)
    assert parse_module_signature(data) == NoSignature(
        "unknown algorithm numbers in struct module_signature (algo 0, hash 9, id_type 2)")


def test_a_signature_longer_than_the_file_means_no_signature():
    data = append_signature(b"", b"x" * 10)[10:]
    assert isinstance(parse_module_signature(data), NoSignature)


def test_truncated_der_is_an_error_with_an_offset(module_bytes, key):
    blob = pkcs7_signature(module_bytes, key)
    error = parse_module_signature(append_signature(module_bytes, blob[:100]))
    assert isinstance(error, SignatureError)
    assert str(error).startswith("module signature: element claims ")


def test_a_signed_data_that_is_not_signed_data_is_an_error(module_bytes):
    blob = bytes.fromhex("300f06092a864886f70d010701a0020400")  # pkcs7-data
    error = parse_module_signature(append_signature(module_bytes, blob))
    assert error == SignatureError("not a PKCS#7 SignedData", 0)


def test_a_digest_kmod_cannot_name_hides_the_signature(module_bytes, key):
    blob = bytearray(pkcs7_signature(module_bytes, key))
    sha256 = bytes.fromhex("608648016503040201")
    at = blob.rindex(sha256)  # the SignerInfo's digestAlgorithm
    blob[at + 4] = 0x3F  # 2.16.840.1.63.3.4.2.1: valid, but no hash kmod knows
    error = parse_module_signature(append_signature(module_bytes, bytes(blob)))
    assert isinstance(error, SignatureError)
    assert error.reason == "digest algorithm kmod does not know"


def test_indefinite_lengths_are_read(module_bytes, key):
    blob = pkcs7_signature(module_bytes, key)
    # Re-encode the outer SEQUENCE with an indefinite length (BER), ending in 00 00.
    assert blob[:2] == b"\x30\x82"
    ber = b"\x30\x80" + blob[4:] + b"\x00\x00"
    info = parse_module_signature(append_signature(module_bytes, ber))
    assert isinstance(info, SignatureInfo) and info.signer == b"kmodd test key"


def test_hex_values_wrap_every_twenty_bytes():
    assert hex_colon(bytes(range(3))) == b"00:01:02"
    assert hex_colon(bytes(range(21))) == (
        b"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:\n\t\t14")
    assert hex_colon(bytes(20)).count(b"\n") == 0
    assert hex_colon(b"") == b""


def test_modinfo_fields_are_in_kmods_order(module_bytes, key):
    info = parse_module_signature(sign_module(module_bytes, key))
    assert isinstance(info, SignatureInfo)
    assert [k for k, _ in modinfo_fields(info)] == [f.encode() for f in SIG_FIELDS]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_or_truncated_signatures_never_raise(module_bytes, key, data):
    signed = bytearray(sign_module(module_bytes, key))
    sig_area = len(signed) - len(module_bytes)
    for _ in range(data.draw(st.integers(0, 4))):
        i = len(module_bytes) + data.draw(st.integers(0, sig_area - 1))
        signed[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, 40))
    result = parse_module_signature(bytes(signed[cut:]))
    assert isinstance(result, SignatureInfo | NoSignature | SignatureError)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_before_the_marker_never_raise(blob):
    result = parse_module_signature(append_signature(b"", blob))
    assert isinstance(result, SignatureInfo | NoSignature | SignatureError)


# --- against the real modinfo ----------------------------------------------------------------

def signature_lines(ran):
    return [line for line in ran.out.split(b"\n")
            if line.split(b":", 1)[0] in {f.encode() for f in SIG_FIELDS}
            or line.startswith(b"\t\t")]


@pytest.mark.oracle
@pytest.mark.parametrize("subject,serial,digest", [
    ("/CN=kmodd test key/O=kmodd", 0x1234ABCD, "sha256"),
    ("/O=Org/OU=Unit", 7, "sha1"),
    ("/CN=first/CN=second", 0x80FF, "sha512"),
    ("/C=DE/O=Ümlaut GmbH", 1, "sha384"),
    ("/CN=long serial", 0x0123456789ABCDEF0123456789ABCDEF, "sha224"),
])
def test_signature_fields_match_the_real_modinfo(tmp_path, keydir, module_bytes, subject,
                                                 serial, digest):
    key = make_signing_key(keydir, subject, serial)
    path = tmp_path / "signed.ko"
    path.write_bytes(sign_module(module_bytes, key, digest))
    ours, real = kmodd_tool(["modinfo", str(path)]), real_tool(["modinfo", str(path)])
    assert signature_lines(ours) and ours == real


@pytest.mark.oracle
@pytest.mark.parametrize("mask", [0x5A, 0x80])
def test_every_single_byte_corruption_shows_what_the_real_modinfo_shows(tmp_path, module_bytes,
                                                                         key, mask):
    """OpenSSL refuses a malformed signature as a whole; kmodd must refuse the same ones."""
    signed = sign_module(module_bytes, key)
    start = len(module_bytes)
    paths = []
    for pos in range(len(signed) - start - 40):
        corrupt = bytearray(signed)
        corrupt[start + pos] ^= mask
        path = tmp_path / f"corrupt{pos}.ko"
        path.write_bytes(bytes(corrupt))
        paths.append(str(path))
    # modinfo prints the files one after another: one run of each tool covers them all.
    ours, real = kmodd_tool(["modinfo", *paths]), real_tool(["modinfo", *paths])
    assert ours == real
