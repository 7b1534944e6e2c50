"""Module files as bytes: ELF sections and modinfo, compression, appended signatures (PKCS#7
and the DER beneath it), and the taint they would cause.

Pure logic like all of `kmodd.core`: data in, data out; the standard library and
`kmodd.core` only."""
