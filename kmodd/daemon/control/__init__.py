"""The control plane: the `io.kmodd` Varlink interface kmodctl talks to.

- `io.kmodd.varlink`: the interface's text, the one source of the contract;
- `interface`: the method table, who may call what (`PRIVILEGES`), the limits, and the
  service built from the text;
- `views`: what the handlers return, one dataclass per type of the text (checked in a test);
- `state`: the handlers' view of the daemon (its records, snapshot and loader);
- `words`: plans, steps and chains in the interface's words.

The generic Varlink server (framing, limits, credentials) is `daemon.varlink`.
"""
