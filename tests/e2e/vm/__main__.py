"""Command line of the e2e test bed: `python3 tests/e2e/vm COMMAND ...` (see --help)."""

import os
import sys

# Run as `python3 tests/e2e/vm`, this directory is sys.path[0]; the package needs its parent.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vm.cli import main

sys.exit(main(sys.argv[1:]))
