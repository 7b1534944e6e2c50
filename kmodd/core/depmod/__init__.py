"""depmod's algorithm: from the modules' metadata to the index files and their text twins,
with kmod's ordering, cycle reports, hashes and messages.

Pure logic like all of `kmodd.core`: data in, data out; the standard library and
`kmodd.core` only."""
