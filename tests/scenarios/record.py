"""Record (or re-record) scenario goldens from the real kmod: `python -m tests.scenarios.record`.

With names, only those scenarios; without, every scenario that has no goldens yet (`--all`
re-records everything). Prints each result so that it can be read before committing.
"""

from __future__ import annotations

import os
import sys
import tempfile

from tests.oracle.kmodrun import KmodRunner

from .build import build_root, load, names


def record(name: str, runner: KmodRunner) -> None:
    scenario = load(name)
    with tempfile.TemporaryDirectory(prefix=f"scenario-{name}-") as tmp:
        root = build_root(scenario, os.path.join(tmp, "root"), runner)
        runner.use_root(root)
        (result,) = runner.run([scenario.case(root)])
        scenario.record(root, result)
    print(f"== {name}: rc {result.rc}")
    for label, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        for line in data.decode(errors="replace").splitlines():
            print(f"   {label}: {line}")


def main(argv: list[str]) -> int:
    if argv == ["--all"]:
        todo = names()
    elif argv:
        todo = argv
    else:
        todo = [n for n in names()
                if not os.path.exists(os.path.join(load(n).path, "expected.rc"))]
    with tempfile.TemporaryDirectory() as nowhere, KmodRunner(nowhere) as runner:
        for name in todo:
            record(name, runner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
