"""The `rp` console script starts without Python's collector sifting the objects its imports make."""

from __future__ import annotations

import subprocess
import sys

#: Runs `rp --version` through an entry point in a fresh interpreter; prints the collections it took, whether the
#: collector is on afterwards, and how many objects it froze.
_COUNT = """
import gc, sys
def collections():
    return sum(s["collections"] for s in gc.get_stats())
import rp_core  # the package (pluggy's hook markers): imported before either entry point's module
before = collections()
from {module} import main
try:
    main(["--version"])
except SystemExit:
    pass
print(collections() - before, gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)
"""


def _startup(module: str) -> tuple[int, bool, int]:
    done = subprocess.run([sys.executable, "-c", _COUNT.format(module=module)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    collections, enabled, frozen = done.stderr.split()[-3:]
    return int(collections), enabled == "True", int(frozen)


def test_the_console_script_starts_without_collections_and_leaves_the_collector_on() -> None:
    plain = _startup("rp_core.cli")
    assert plain[0] > 10  # the same start with the collector on: it runs, over objects that are never garbage
    collections, enabled, frozen = _startup("rp_core.entry")
    assert collections == 0
    assert enabled
    assert frozen > 10_000  # what the imports made (~58,000 objects), skipped by every later collection


def test_the_console_script_is_the_entry_module() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "rp"]
    assert script.value == "rp_core.entry:main"
