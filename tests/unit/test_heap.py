"""settle_heap, in a fresh interpreter: start-up objects frozen, young collections rarer, cycles still freed."""

from __future__ import annotations

import subprocess
import sys

from ..support.processes import ROOT

PROBE = """
import gc, weakref
from tokenrelay.core.heap import YOUNG_THRESHOLD, settle_heap
assert gc.get_freeze_count() == 0
settle_heap()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
freed = []
weakref.finalize(a, freed.append, True)
del a, b
gc.collect()
assert freed == [True]
print("ok")
"""


def test_settle_heap_freezes_start_up_and_still_frees_cycles():
    # Imports first, as a gateway or worker has them when it calls settle_heap.
    code = "import api.app\n" + PROBE
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
