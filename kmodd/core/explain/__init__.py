"""`kmodctl explain`: the facts gathered about a module, the rules that turn them into
findings (the module's own and the kernel's), and the explanation's model and wire format.

Pure logic like all of `kmodd.core`: data in, data out; the standard library and
`kmodd.core` only."""
