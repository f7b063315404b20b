"""A worker process freezes what it holds after start-up out of the collector's full passes
(a full pass holds the interpreter lock: in a busy worker it stalled every job thread and
the waker for 47-115 ms)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
import chimeway.worker as worker
garbage = [[i] for i in range(100_000)]
assert gc.get_freeze_count() == 0
worker._freeze_startup_objects()
frozen = gc.get_freeze_count()
gc.collect()
print(frozen, len(gc.get_objects(generation=2)))
"""


def test_start_up_objects_are_frozen_out_of_full_collections() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
    ).stdout.split()
    frozen, left = int(out[0]), int(out[1])
    assert frozen > 100_000  # the modules, the app's libraries and what they built
    assert left < frozen / 10  # what a full collection still scans
