"""Command line of the e2e test bed: `python3 tests/e2e/vm COMMAND ...` (see --help)."""

import os
import sys

# Run as `python3 tests/e2e/vm`, this directory is sys.path[0]: the checkout replaces it, so that
# the package is `tests.e2e.vm` and its modules are not also importable by their bare names.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from tests.e2e.vm.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
