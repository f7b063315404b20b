"""The examples of docs/policy.md that need a database run, against a fresh one, with ``cw``
a Chimeway on it (the others run in tests/policy/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chimeway import Chimeway

PAGE = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
BLOCK = re.compile(r"^```python\n(# needs a database.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_database_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_example_runs(block: str, cw: Chimeway) -> None:
    namespace: dict[str, object] = {"cw": cw}
    exec(compile(block, str(PAGE), "exec"), namespace)
    assert len(namespace) > 2  # the block defined what it asserts on
