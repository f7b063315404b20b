"""docs/policy.md's examples run and hold, and its worked quiet-hours table is true."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chimeway.policy import QuietHours, held_until

PAGE = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Blocks that need a database run in tests/integration/test_policy_docs.py.
NEEDS_DATABASE = "# needs a database"
BLOCKS = [
    b for b in BLOCK.findall(PAGE.read_text(encoding="utf-8")) if not b.startswith(NEEDS_DATABASE)
]


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_example_runs(block: str) -> None:
    namespace: dict[str, object] = {}
    exec(compile(block, str(PAGE), "exec"), namespace)
    assert namespace  # the block defined what it asserts on


PARIS = "Europe/Paris"
# The rows of the worked-examples table: (start, end, zone, local trigger, held until in UTC).
WORKED = [
    ("22:00", "07:00", PARIS, "2026-06-01T23:10", "2026-06-02T05:00"),
    ("22:00", "07:00", PARIS, "2026-10-24T23:10", "2026-10-25T06:00"),
    ("22:00", "07:00", PARIS, "2026-03-28T23:10", "2026-03-29T05:00"),
    ("22:00", "07:00", PARIS, "2026-06-01T21:59", None),
    ("22:00", "07:00", PARIS, "2026-06-02T07:00", None),
    ("22:00", "02:30", PARIS, "2026-03-29T01:15", "2026-03-29T01:00"),
    ("22:00", "02:30", PARIS, "2026-10-25T02:15+02:00", "2026-10-25T01:30"),
    ("22:00", "01:30", "America/New_York", "2026-11-01T01:45-04:00", "2026-11-01T06:30"),
    ("01:30", "05:00", "America/New_York", "2026-11-01T01:15-05:00", "2026-11-01T10:00"),
    ("22:00", "07:00", "Australia/Lord_Howe", "2026-04-05T06:45", "2026-04-04T20:30"),
    ("22:00", "07:00", "Asia/Kolkata", "2026-03-07T22:00", "2026-03-08T01:30"),
]


@pytest.mark.parametrize(("start", "end", "zone", "local", "expected"), WORKED)
def test_worked_example(start: str, end: str, zone: str, local: str, expected: str | None) -> None:
    triggered = datetime.fromisoformat(local)
    if triggered.tzinfo is None:
        triggered = triggered.replace(tzinfo=ZoneInfo(zone))
    quiet = QuietHours(time.fromisoformat(start), time.fromisoformat(end), zone)
    want = None if expected is None else datetime.fromisoformat(expected).replace(tzinfo=UTC)
    assert held_until(triggered, quiet) == want
