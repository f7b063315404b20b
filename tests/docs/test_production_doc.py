"""docs/production.md states the retention defaults that ``Retention()`` has."""

from __future__ import annotations

import re
from pathlib import Path

from chimeway import Retention

PAGE = Path(__file__).resolve().parents[2] / "docs" / "production.md"
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \|", re.MULTILINE)


def _documented() -> dict[str, str]:
    section = PAGE.read_text(encoding="utf-8").split("## Retention", 1)[1].split("\n## ", 1)[0]
    return {name: value.strip() for name, value in ROW.findall(section)}


def _shown(value: object) -> str:
    if hasattr(value, "days"):
        days = value.days
        return f"{days} day" if days == 1 else f"{days} days"
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def test_the_retention_table_shows_every_default() -> None:
    defaults = Retention()
    documented = _documented()
    expected = {
        name: _shown(getattr(defaults, name))
        for name in ("jobs", "history", "signals", "webhooks", "processes", "batch_size", "cron")
    }
    assert documented == expected
