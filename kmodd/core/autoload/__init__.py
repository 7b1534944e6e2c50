"""Loading for devices, as udev's kmod builtin does and kmodd goes beyond it: uevents, the
decision per modalias, udev's static rules, outcomes and their causes, the journal's
kinds of records, the kernel log's lines, the crash-safe record of loads and the
re-probe rules.

Pure logic like all of `kmodd.core`: data in, data out; the standard library and
`kmodd.core` only."""
