"""docs/states.md is generated from the ALLOWED tables and must not drift from them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chimeway.diagrams import (
    REGENERATE,
    START,
    delivery_diagram,
    render_states_doc,
    run_diagram,
    run_terminal_states,
)
from chimeway.store import deliveries
from chimeway.store import runs as workflows
from chimeway.types import TERMINAL_DELIVERY_STATUSES

ROOT = Path(__file__).resolve().parents[2]
ARROW = re.compile(r"^\s*(\S+) --> (\S+)\s*$")
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \|")


def arrows(diagram: str) -> list[tuple[str, str]]:
    lines = diagram.splitlines()
    assert lines[0] == "stateDiagram-v2"
    found = [m.groups() for line in lines[1:] if (m := ARROW.match(line))]
    others = [
        line for line in lines[1:] if not ARROW.match(line) and not line.strip().startswith("note")
    ]
    assert others == [], f"unexpected diagram lines: {others}"
    return [(a, b) for a, b in found]


def allowed_moves(allowed: Mapping[Any, Any]) -> set[tuple[str, str]]:
    return {(str(a), str(b)) for a, targets in allowed.items() for b in targets}


def check(diagram: str, allowed: Mapping[Any, Any], initial: str, terminal: set[str]) -> None:
    found = arrows(diagram)
    assert len(found) == len(set(found)), "an arrow is drawn twice"
    assert [b for a, b in found if a == START] == [initial]
    assert {a for a, b in found if b == START} == terminal
    moves = {(a, b) for a, b in found if START not in (a, b)}
    assert moves == allowed_moves(allowed)


def test_states_doc_is_up_to_date() -> None:
    written = (ROOT / "docs" / "states.md").read_text(encoding="utf-8")
    assert written == render_states_doc(), (
        f"docs/states.md is out of date with the ALLOWED tables; regenerate it with `{REGENERATE}`"
    )


def test_delivery_diagram_draws_every_allowed_move_and_nothing_else() -> None:
    check(
        delivery_diagram(),
        deliveries.ALLOWED,
        "pending",
        {str(s) for s in TERMINAL_DELIVERY_STATUSES},
    )


def test_run_diagram_draws_every_allowed_move_and_nothing_else() -> None:
    terminal = {str(s) for s in run_terminal_states()}
    assert terminal == {"completed", "stopped", "failed"}
    check(run_diagram(), workflows.ALLOWED, "active", terminal)


@pytest.mark.parametrize(
    ("allowed", "heading"),
    [(deliveries.ALLOWED, "## Deliveries"), (workflows.ALLOWED, "## Workflow runs")],
)
def test_each_table_lists_every_allowed_move_once(allowed: Mapping[Any, Any], heading: str) -> None:
    doc = render_states_doc()
    section = doc.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [m.groups() for line in section.splitlines() if (m := ROW.match(line))]
    assert len(rows) == len(set(rows))
    assert set(rows) == allowed_moves(allowed)
    assert rows == sorted(rows)


def test_output_is_deterministic() -> None:
    assert render_states_doc() == render_states_doc()
    for diagram in (delivery_diagram(), run_diagram()):
        found = arrows(diagram)
        moves = [move for move in found if START not in move]
        ends = [a for a, b in found if b == START]
        assert moves == sorted(moves)
        assert ends == sorted(ends)
