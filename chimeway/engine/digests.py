"""Digests (design §15): closing a batch, rendering its digest, folding its members.

A workflow that starts with a ``Batch`` collects a recipient's notifications into one run
(joining is decided in :mod:`chimeway.engine.planning`). The run waits, like any other
wait, until the batch's window ends (its timer, or the due sweep) or the batch fills up
(the join that filled it queued the timer at once). Then, in the transaction that moves the
run on (:mod:`chimeway.engine.progression.drive`), :func:`close` closes the batch and
renders one digest of every member through the notifier's ``render_batch``, the first step
plans its delivery with that content through planning (policy applies as to any delivery),
and :func:`fold` records every other member's own delivery as ``digested`` into it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chimeway.db import Conn
from chimeway.engine.context import Engine
from chimeway.errors import InvalidNotifier
from chimeway.notifiers import Notifier, Recipient
from chimeway.store import deliveries, digests
from chimeway.store.deliveries import PlannedRow
from chimeway.store.digests import Digest
from chimeway.store.runs import Run
from chimeway.types import DeliveryStatus, DigestState

INCLUDED = "included_in_digest"


@dataclass(frozen=True)
class Closed:
    """A batch closed for its run: the digest's content and what explains the close."""

    digest_id: uuid.UUID
    render_data: dict[str, Any]
    details: dict[str, Any]


def lock_for(conn: Conn, runs: Sequence[Run]) -> dict[uuid.UUID, Digest]:
    """The batches of these runs (locked after them), by run id."""
    return digests.lock_by_runs(conn, [run.id for run in runs])


def close(
    engine: Engine, conn: Conn, due: Sequence[tuple[Run, Digest]], now: dt.datetime
) -> dict[uuid.UUID, Closed]:
    """Close the batches of these runs (their window ended, or they filled up), and render
    each digest. By run id."""
    if not due:
        return {}
    closed = digests.close(conn, [d.id for _, d in due if d.state == DigestState.OPEN])
    members = digests.members(conn, [d.id for _, d in due])
    result: dict[uuid.UUID, Closed] = {}
    contents: list[tuple[uuid.UUID, dict[str, Any]]] = []
    for run, held in due:
        digest = closed.get(held.id, held)
        items = members[digest.id]
        notifier = engine.notifier(str(run.status_context.get("notifier")))
        recipient = Recipient(id=run.recipient_id, type=items[0].recipient_type)
        # Every channel of the workflow: later steps (an escalation) send the digest too.
        channels = dict.fromkeys(s.channel for s in engine.catalog.steps(conn, run.definition_id))
        rendered = {
            channel: _render(engine, notifier, [m.assigns for m in items], recipient, channel)
            for channel in channels
        }
        contents.append((run.notification_id, rendered))
        result[run.id] = Closed(
            digest.id,
            rendered[str(run.status_context.get("channel"))],
            {
                "close_reason": digest.close_reason,
                "closed_at": (digest.closed_at or now).isoformat(),
                "members": len(items),
            },
        )
    digests.set_contents(conn, contents)
    return result


def _render(
    engine: Engine,
    notifier: Notifier,
    items: list[dict[str, Any]],
    recipient: Recipient,
    channel: str,
) -> dict[str, Any]:
    content: object = notifier.render_batch(items, recipient, channel)
    if not isinstance(content, dict):
        raise InvalidNotifier(
            f"{type(notifier).__name__}.render_batch() must return a dict for channel "
            f"{channel!r}, got {type(content).__name__}"
        )
    return engine.content_schemas.validate(channel, content)


def fold(conn: Conn, sent_as: Sequence[tuple[uuid.UUID, PlannedRow]]) -> None:
    """Each batch is sent as this planned delivery: its members' own held deliveries become
    ``digested`` into it, each with a history row naming it (one statement for all)."""
    if not sent_as:
        return
    digests.set_deliveries(conn, [(digest_id, row.id) for digest_id, row in sent_as])
    members = digests.members(conn, [digest_id for digest_id, _ in sent_as])
    moves = [
        deliveries.Move(
            member.delivery_id,
            DeliveryStatus.DIGESTED,
            INCLUDED,
            context={
                "digest_id": str(digest_id),
                "digest_delivery_id": str(row.id),
                "position": member.position,
                "members": len(members[digest_id]),
            },
        )
        for digest_id, row in sent_as
        for member in members[digest_id]
        if member.delivery_id is not None
    ]
    deliveries.transition_many(conn, moves, only_from=[DeliveryStatus.PENDING])
