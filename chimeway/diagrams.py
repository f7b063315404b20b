"""Mermaid state diagrams of the two state machines, drawn from their ``ALLOWED`` tables.

``docs/states.md`` is :func:`render_states_doc`'s output and a test keeps the two equal, so
the documented moves are always the ones the guarded transition functions allow. Regenerate
it with ``python -m chimeway.diagrams > docs/states.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Set
from enum import StrEnum
from typing import Final, TypeVar

from chimeway.store import deliveries, runs
from chimeway.types import TERMINAL_DELIVERY_STATUSES, DeliveryStatus, RunState

__all__ = [
    "DELIVERY_MOVES",
    "RUN_MOVES",
    "delivery_diagram",
    "render_states_doc",
    "run_diagram",
    "run_terminal_states",
    "state_diagram",
]

E = TypeVar("E", bound=StrEnum)

START: Final = "[*]"
REGENERATE: Final = "python -m chimeway.diagrams > docs/states.md"

#: What each delivery move means (design §5); a move without an entry shows "-".
DELIVERY_MOVES: Final[Mapping[tuple[str, str], str]] = {
    ("pending", "dispatched"): "A worker claims it to send (`dispatched`).",
    ("pending", "suppressed"): "Not to be sent; `suppression_reason` says why.",
    ("pending", "cancelled"): (
        "Cancelled before any attempt: an operator cancelled its run (`manual`, history "
        "`run_cancelled`)."
    ),
    ("dispatched", "dispatched"): (
        "Takeover: its send has been `dispatched` longer than `stuck_after`, so another "
        "worker claims it (`redispatched_after_interruption`); or its claimant's claim "
        "committed but the reply was lost, so it claims it again, never having sent it "
        "(`redispatched_after_lost_claim`)."
    ),
    ("dispatched", "succeeded"): "The adapter returned `Sent` (`sent`).",
    ("dispatched", "failed"): (
        "A temporary failure (`Temporary` or any unexpected exception); a retry is "
        "scheduled at `retry_at`, or on the last attempt it is cancelled at once."
    ),
    ("dispatched", "cancelled"): "The adapter reported `Permanent` (`permanent_failure`) "
    "or `Bounced` (`bounced`).",
    ("failed", "dispatched"): "Its retry is due and a worker claims it.",
    ("failed", "suppressed"): (
        "Policy stops its retry at the claim: the recipient opted out after the first "
        "attempt, or a cap was lowered; `suppression_reason` says which."
    ),
    ("succeeded", "cancelled"): (
        "Provider feedback after the send: a bounce (`bounced`) or a permanent failure "
        "(`permanent_failure`) reported by the provider's webhook."
    ),
    ("succeeded", "failed"): (
        "Provider feedback after the send: a temporary failure; a retry is scheduled, or it "
        "is cancelled at once (`retries_exhausted`) when no attempt is left."
    ),
    ("failed", "cancelled"): (
        "The last attempt failed (`retries_exhausted`), or its run moved on through an "
        "explicit `temporary_failure` rule (`superseded`), or an operator cancelled its run "
        "(`manual`, history `run_cancelled`)."
    ),
    ("failed", "pending"): (
        "An operator's redrive (`cw.redrive_delivery`, history `redriven`): sent now, not at "
        "its retry time."
    ),
    ("cancelled", "pending"): (
        "An operator's redrive of a delivery whose provider gave up (`retries_exhausted`, "
        "`permanent_failure`, `abandoned`): one more attempt."
    ),
}

#: What each run move means (design §6, §7).
RUN_MOVES: Final[Mapping[tuple[str, str], str]] = {
    ("active", "active"): (
        "The cursor moves to a later step (`step_activated`) after an `OnOutcome`, an "
        "`OnSignal` or an elapsed wait; the step's delivery is planned in the same transaction."
    ),
    ("active", "waiting"): (
        "A `WaitUntil` rule on a terminal outcome: `suspended_until` is the due time and "
        "`pending_signals` the events that end the wait early."
    ),
    ("active", "completed"): (
        "A terminal outcome with no matching rule (`implicit_completion`), or a cancel "
        "signal with no `OnSignal` rule (`wait_cancelled_by_signal`)."
    ),
    ("active", "stopped"): (
        "A `Stop` rule matched the outcome (`stopped_on_<outcome>`), or an operator "
        "cancelled the run (`cw.cancel_run`, `run_cancelled`)."
    ),
    ("active", "failed"): "The run cannot go on.",
    ("waiting", "active"): (
        "The wait is due (`reactivated_from_wait`) or a listened-for signal arrived "
        "(`signal_received`)."
    ),
    ("waiting", "stopped"): (
        "An operator cancelled the run during its wait (`cw.cancel_run`, `run_cancelled`)."
    ),
}


def _moves(allowed: Mapping[E, Set[E]]) -> list[tuple[str, str]]:
    return sorted(
        (str(origin), str(target)) for origin, targets in allowed.items() for target in targets
    )


def state_diagram(
    allowed: Mapping[E, Set[E]],
    initial: E,
    terminal: Iterable[E],
) -> str:
    """A Mermaid ``stateDiagram-v2``: ``[*]`` to ``initial``, one arrow per allowed move,
    each terminal state to ``[*]``, and a note on states no move leads to. Sorted."""
    moves = _moves(allowed)
    reached = {target for _, target in moves} | {str(initial)}
    lines = ["stateDiagram-v2", f"    {START} --> {initial}"]
    lines += [f"    {origin} --> {target}" for origin, target in moves]
    lines += [f"    {state} --> {START}" for state in sorted(str(s) for s in terminal)]
    lines += [
        f"    note right of {state} : no allowed move leads here"
        for state in sorted(str(s) for s in allowed)
        if state not in reached
    ]
    return "\n".join(lines) + "\n"


def delivery_diagram() -> str:
    """The delivery state machine (:data:`chimeway.store.deliveries.ALLOWED`)."""
    return state_diagram(deliveries.ALLOWED, DeliveryStatus.PENDING, TERMINAL_DELIVERY_STATUSES)


def run_terminal_states() -> list[RunState]:
    """Run states with no outgoing move."""
    return sorted(state for state, targets in runs.ALLOWED.items() if not targets)


def run_diagram() -> str:
    """The workflow run state machine (:data:`chimeway.runs.ALLOWED`)."""
    return state_diagram(runs.ALLOWED, RunState.ACTIVE, run_terminal_states())


def _table(allowed: Mapping[E, Set[E]], meanings: Mapping[tuple[str, str], str]) -> str:
    rows = ["| From | To | Meaning |", "| --- | --- | --- |"]
    rows += [
        f"| `{origin}` | `{target}` | {meanings.get((origin, target), '-')} |"
        for origin, target in _moves(allowed)
    ]
    return "\n".join(rows) + "\n"


def _states(states: Iterable[StrEnum]) -> str:
    return ", ".join(f"`{s}`" for s in sorted(str(s) for s in states))


def render_states_doc() -> str:
    """The full markdown of ``docs/states.md``."""
    return f"""\
# State machines

<!-- Generated by chimeway/diagrams.py; do not edit. Regenerate with:
     {REGENERATE} -->

Deliveries and workflow runs each have a status column that changes in exactly one guarded
function, one statement for any number of rows: `chimeway.store.deliveries.transition_many` (with
`transition` for one delivery, and `claim_many` for the move to `dispatched`) and
`chimeway.store.runs.update_runs`. Each allows only the moves in its module's `ALLOWED` table
and writes a history row with the move (`chimeway_delivery_transitions`,
`chimeway_workflow_transitions`); a move the table does not allow changes nothing (and raises
`InvalidTransition` where the caller asked for that one move). The diagrams and tables
below are drawn from those tables, and `tests/docs` fails when they drift.

## Deliveries

A delivery starts `pending`. Terminal statuses: {_states(TERMINAL_DELIVERY_STATUSES)}.

```mermaid
{delivery_diagram()}```

{_table(deliveries.ALLOWED, DELIVERY_MOVES)}
## Workflow runs

A run starts `active` on its first step. Terminal states (no move out):
{_states(run_terminal_states())}.

```mermaid
{run_diagram()}```

{_table(runs.ALLOWED, RUN_MOVES)}"""


if __name__ == "__main__":
    sys.stdout.write(render_states_doc())
