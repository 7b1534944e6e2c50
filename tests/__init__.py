"""kmodd's test suite: one package, mirroring kmodd/'s layout.

Every helper is imported by its full name (`tests.daemon.daemon_tree`, `tests.e2e.vm.machine`)
and no test puts a directory on sys.path, so that a module has one name for pytest, for mypy
and for the scripts the tests start (which put the checkout itself on sys.path). The one
exception is tests/e2e/vm/guest/, whose scripts run inside the guest from /vm.
"""
