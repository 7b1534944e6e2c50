"""Fixture modules for tests: real ELF `.ko` files, and signatures made with openssl.

`write_module` writes a module that needs and exports symbols (with `__versions` and export
CRCs as a modversions build has them) through tests/kobuild; `make_signing_key`,
`pkcs7_signature` and `sign_module` append a signature the way scripts/sign-file does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kmodd.core.modfile.signature import MODULE_SIGNATURE, PKEY_ID_PKCS7, SIG_MAGIC
from tests.fakes import DEBIAN_VERMAGIC


def standard_modinfo(name: str, *extra: str, vermagic: str = DEBIAN_VERMAGIC,
                     intree: bool = True, license_: str = "GPL") -> list[str]:
    """`.modinfo` strings the way kbuild writes them for an in-tree module."""
    items = [f"license={license_}", *extra, "depends=", "retpoline=Y"]
    if intree:
        items.append("intree=Y")
    items += [f"name={name}", f"vermagic={vermagic}"]
    return items


def write_module(directory: str, name: str, *, exports: Iterable[str] = (),
                 needs: Iterable[str] = (), weak_needs: Iterable[str] = (),
                 kernel_crcs: Mapping[str, int] | None = None,
                 export_crcs: Mapping[str, int] | None = None,
                 modinfo: Iterable[str] | None = None, layout_crc: int | None = None,
                 filename: str | None = None) -> str:
    """Write `<directory>/<name>.ko`, a real ELF module that needs and exports symbols.

    `__versions` gets a record for each needed symbol whose CRC `kernel_crcs` gives, plus
    `module_layout` when `layout_crc` is set; exports get CRCs from `export_crcs`.
    """
    from tests.kobuild import KoSpec, write_ko

    needs = list(needs)
    crcs = dict(kernel_crcs or {})
    versions: list[tuple[int, str]] = []
    if layout_crc is not None:
        versions.append((layout_crc, "module_layout"))
    versions += [(crcs[n], n) for n in [*needs, *weak_needs] if n in crcs]
    spec = KoSpec(name=name, modinfo=list(modinfo if modinfo is not None
                                          else standard_modinfo(name)),
                  exports=list(exports), export_crcs=dict(export_crcs or {}), needs=needs,
                  weak_needs=list(weak_needs), versions=versions)
    os.makedirs(directory, exist_ok=True)
    return write_ko(os.path.join(directory, filename or f"{name.replace('_', '-')}.ko"), spec)


@dataclass(frozen=True)
class SigningKey:
    """A throw-away RSA key and self-signed certificate made with openssl."""

    key: str
    cert: str
    subject: str
    serial: int


def make_signing_key(directory: str, subject: str = "/CN=kmodd test key",
                     serial: int = 0x1234ABCD, bits: int = 1024) -> SigningKey:
    os.makedirs(directory, exist_ok=True)
    tag = f"{abs(hash((subject, serial))):x}"
    key, cert = os.path.join(directory, f"{tag}.key"), os.path.join(directory, f"{tag}.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", f"rsa:{bits}", "-nodes", "-keyout",
                    key, "-out", cert, "-subj", subject, "-set_serial", str(serial),
                    "-days", "2"], check=True, capture_output=True)
    return SigningKey(key, cert, subject, serial)


def pkcs7_signature(data: bytes, key: SigningKey, digest: str = "sha256") -> bytes:
    """A detached PKCS#7 (CMS) signature of `data`, as scripts/sign-file makes them."""
    return subprocess.run(
        ["openssl", "cms", "-sign", "-signer", key.cert, "-inkey", key.key, "-binary",
         "-noattr", "-nocerts", "-outform", "DER", "-md", digest],
        input=data, check=True, capture_output=True).stdout


def append_signature(data: bytes, blob: bytes, *, id_type: int = PKEY_ID_PKCS7, algo: int = 0,
                     hash_: int = 0, signer: bytes = b"", key_id: bytes = b"") -> bytes:
    """`data` with a signature block and `struct module_signature` and the magic appended."""
    header = MODULE_SIGNATURE.pack(algo, hash_, id_type, len(signer), len(key_id), len(blob))
    return data + signer + key_id + blob + header + SIG_MAGIC


def sign_module(data: bytes, key: SigningKey, digest: str = "sha256") -> bytes:
    return append_signature(data, pkcs7_signature(data, key, digest))


def module_tree(root: str, kver: str, modules: Mapping[str, Mapping[str, object]],
                files: Mapping[str, str | bytes] | None = None, *, depmod: bool = True) -> str:
    """A fake root: `modules` {path: write_module keywords} and `files` {path: content}.

    A module path is relative to `lib/modules/<kver>` or absolute inside the root; the name
    is the file's, with `_`. `modules.order` lists the relative ones in the given order; then
    kmodd's depmod (byte-identical to kmod's, tests/oracle) indexes the tree as `/`.
    """
    import io

    from kmodd.cli.depmod import run as depmod_run
    from kmodd.system.root import Root

    moddir = os.path.join(root, "lib/modules", kver)
    os.makedirs(moddir, exist_ok=True)
    os.makedirs(os.path.join(root, "sys/module"), exist_ok=True)
    order = []
    for rel, spec in modules.items():
        path = os.path.join(root, rel.lstrip("/")) if rel.startswith("/") else \
            os.path.join(moddir, rel)
        base = os.path.basename(rel).split(".", 1)[0]
        name = base.replace("-", "_")
        keywords = dict(spec)
        keywords.setdefault("modinfo", standard_modinfo(name))
        write_module(os.path.dirname(path), name, filename=os.path.basename(path),
                     **keywords)  # type: ignore[arg-type]
        if not rel.startswith("/"):
            order.append(rel)
    with open(os.path.join(moddir, "modules.order"), "w") as f:
        f.writelines(f"{rel}\n" for rel in order)
    for rel, content in (files or {}).items():
        path = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    if depmod:
        err = io.BytesIO()
        rc = depmod_run(["depmod", kver], root=Root(root), stdout=io.BytesIO(), stderr=err,
                        environ={})
        if rc:
            raise RuntimeError(f"depmod failed in {root}: {err.getvalue().decode()}")
    return root
