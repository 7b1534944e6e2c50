"""kmod's formats and semantics, byte for byte: the index files and their readers, modprobe.d,
lookup and resolution, probe plans, removal, module parameters, and libkmod's messages.

What lives here answers the questions modprobe and libkmod answer, from data given to it.

Pure logic like all of `kmodd.core`: data in, data out; the standard library and
`kmodd.core` only."""
