"""The in-app inbox (design §14): a recipient's feed, counts and marks, the tokens that let
a browser read them, and the changes that wake open streams.

An item is a notification whose ``in_app`` delivery was sent: :func:`enter` puts it in the
inbox when that delivery's success is recorded. The feed is ordered by the moment each item
arrived (``delivered_at``), then id, newest first; a cursor is a position in that order, so
pages never repeat or skip an item while new ones arrive at the top.

The first time an item is seen or read, its mark emits ``chimeway.notification.seen`` or
``...read`` for the recipient in the same transaction (which is what cancels an escalation
waiting for it). Each signal's idempotency key names the item, so an item emits each signal
once, ever, whatever the races or repeats.

Changes are announced on the ``chimeway_inbox`` channel at commit. A payload holds a short
routing key derived from (tenant, recipient) and, for a new item, its id: never content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import psycopg

from chimeway.db import Conn
from chimeway.engine.context import Engine
from chimeway.errors import ConfigurationError, InvalidArgument
from chimeway.inputs import identifier, limit
from chimeway.policy.tokens import InboxClaims, TokenSigner
from chimeway.results import (
    InboxAction,
    InboxCounts,
    InboxItem,
    InboxMarked,
    InboxPage,
    InboxStatus,
)
from chimeway.store import inbox, signals
from chimeway.store.inbox import Addressed, Filter

logger = logging.getLogger(__name__)

IN_APP = "in_app"
SEEN = "chimeway.notification.seen"
READ = "chimeway.notification.read"
MAX_LIMIT = 100
MAX_MARK_IDS = 1000
MAX_TOKEN_TTL = dt.timedelta(days=30)
#: A reconnecting stream replays from this long before its last item: an item that reached
#: the inbox in a transaction committed after a later one is not skipped (clients drop
#: the items they already have, by id).
REPLAY_MARGIN = dt.timedelta(seconds=5)
REPLAY_LIMIT = 100

ACTIONS: tuple[str, ...] = get_args(InboxAction)
STATUSES: tuple[str, ...] = get_args(InboxStatus)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NEWEST = (dt.datetime.max.replace(tzinfo=dt.UTC), uuid.UUID(int=(1 << 128) - 1))
_CURSOR = re.compile(r"(\d{1,17})\.([0-9a-f]{32})")


# -- reads ----------------------------------------------------------------------------------


def list_items(
    engine: Engine,
    tenant_id: str,
    recipient_id: str,
    *,
    status: InboxStatus = "all",
    archived: bool = False,
    limit_to: int = 50,
    cursor: str | None = None,
    conn: Conn | None = None,
) -> InboxPage:
    """One page of the recipient's feed, newest first: ``status`` keeps only unread or
    unseen items; ``archived`` lists the archived items instead of the others."""
    _inbox_of(tenant_id, recipient_id)
    if status not in STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if not isinstance(archived, bool):
        raise InvalidArgument(f"archived must be a bool, got {type(archived).__name__}")
    size = limit("limit", limit_to, InvalidArgument, maximum=MAX_LIMIT)
    before = _NEWEST if cursor is None else parse_cursor(cursor)
    only = Filter(archived=archived, unread=status == "unread", unseen=status == "unseen")
    with engine.transaction(conn) as tx:
        found = inbox.page(tx, tenant_id, recipient_id, before=before, only=only, limit=size + 1)
    more = len(found) > size
    return InboxPage(found[:size], found[size - 1].cursor if more else None)


def counts(
    engine: Engine, tenant_id: str, recipient_id: str, conn: Conn | None = None
) -> InboxCounts:
    """How many of the recipient's unarchived items are unseen, unread, and in all."""
    pair = _inbox_of(tenant_id, recipient_id)
    with engine.transaction(conn) as tx:
        return inbox.counts(tx, [pair])[pair]


def replay(
    engine: Engine, tenant_id: str, recipient_id: str, after: str
) -> tuple[list[InboxItem], bool]:
    """The unarchived items a stream whose last item was at cursor ``after`` may have
    missed (from :data:`REPLAY_MARGIN` before it), oldest first, and whether there were
    more than :data:`REPLAY_LIMIT` (then the client should reload its list)."""
    at, _ = parse_cursor(after)
    with engine.transaction() as tx:
        found = inbox.since(tx, tenant_id, recipient_id, at - REPLAY_MARGIN, REPLAY_LIMIT + 1)
    return found[:REPLAY_LIMIT], len(found) > REPLAY_LIMIT


def updates(
    engine: Engine, item_ids: Sequence[uuid.UUID], inboxes: Sequence[tuple[str, str]]
) -> tuple[list[Addressed], dict[tuple[str, str], InboxCounts]]:
    """What open streams are told after a batch of changes, in one transaction: the new
    items, and the counts of the inboxes that changed (those of the new items too)."""
    with engine.transaction() as tx:
        found = inbox.items(tx, item_ids)
        changed = sorted({*inboxes, *((a.tenant_id, a.recipient_id) for a in found)})
        return found, inbox.counts(tx, changed)


async def listen(conn: psycopg.AsyncConnection[Any]) -> None:
    """Subscribe ``conn`` (autocommit) to the changes announced by :func:`enter` and
    :func:`mark`."""
    await inbox.listen(conn)


# -- marks ----------------------------------------------------------------------------------


def mark(
    engine: Engine,
    tenant_id: str,
    recipient_id: str,
    notification_ids: Sequence[uuid.UUID | str] | Literal["all"],
    action: InboxAction,
    conn: Conn | None = None,
) -> InboxMarked:
    """Mark the recipient's items (``"all"``, or these ids: those that are not this
    recipient's items are left alone) ``seen``, ``read`` (which also sees),
    ``archived``, ``unarchived`` or ``unread``, in one transaction (the caller's, with
    ``conn``). Each item seen or read for the first time emits its signal in it."""
    _inbox_of(tenant_id, recipient_id)
    if action not in ACTIONS:
        raise InvalidArgument(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    ids = None if notification_ids == "all" else _ids(notification_ids)
    with engine.transaction(conn) as tx:
        changed = inbox.mark(tx, tenant_id, recipient_id, ids, action)
        new = [
            signals.NewSignal(event, {"notification_id": str(row.id)}, f"{event}:{row.id}")
            for row in changed
            for event, became in ((SEEN, row.became_seen), (READ, row.became_read))
            if became
        ]
        emitted = signals.insert_many(tx, tenant_id, recipient_id, new)
        engine.deferrer.route_signals(tx, emitted)
        if changed:
            inbox.notify(tx, [mark_payload(routing_key(tenant_id, recipient_id), action)])
    logger.info(
        "inbox marked",
        extra={
            "action": "inbox.marked",
            "tenant_id": tenant_id,
            "mark": action,
            "changed": len(changed),
            "signals": len(emitted),
        },
    )
    return InboxMarked(action, [row.id for row in changed], len(emitted))


# -- tokens ---------------------------------------------------------------------------------


def token(
    engine: Engine,
    tenant_id: str,
    recipient_id: str,
    ttl: dt.timedelta,
    now: dt.datetime | None = None,
) -> str:
    """A token that lets its bearer read and mark this recipient's inbox for ``ttl``."""
    _inbox_of(tenant_id, recipient_id)
    if not isinstance(ttl, dt.timedelta) or not dt.timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise InvalidArgument(
            f"ttl must be a timedelta above zero and at most {MAX_TOKEN_TTL.days} days, got {ttl!r}"
        )
    expires_at = _now(now) + ttl
    return _signer(engine).sign_inbox(InboxClaims(tenant_id, recipient_id, expires_at))


def verify(engine: Engine, presented: str, now: dt.datetime | None = None) -> InboxClaims:
    """The claims of a valid inbox token; ``InvalidToken`` (or ``TokenExpired``) otherwise."""
    return _signer(engine).verify_inbox(presented, now=_now(now))


def _signer(engine: Engine) -> TokenSigner:
    if engine.signer is None:
        raise ConfigurationError(
            "inbox tokens need a secret: pass secret=... to Chimeway or set CHIMEWAY_SECRET"
        )
    return engine.signer


def _now(now: dt.datetime | None) -> dt.datetime:
    """Tokens are checked on every request without a database round trip: the clock is
    this process's (keep it in sync), or ``now`` in tests."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.utcoffset() is None:
        raise InvalidArgument("now must be a timezone-aware datetime")
    return now


# -- cursors and payloads -------------------------------------------------------------------


def parse_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The (delivered_at, id) position of a cursor that :attr:`InboxItem.cursor` made."""
    found = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if found is None:
        raise InvalidArgument("cursor is malformed: pass a next_cursor or an item's cursor")
    # At most 17 digits: within datetime's range (to the year 5138).
    return _EPOCH + dt.timedelta(microseconds=int(found[1])), uuid.UUID(hex=found[2])


def routing_key(tenant_id: str, recipient_id: str) -> str:
    """A short key for an inbox, the same in every process (the payloads' address). The
    record of a send computes it too, in SQL (``delivery_record``): the first 16 hex digits
    of the MD5 of the tenant and the recipient joined by U+001F, which no identifier holds."""
    data = f"{tenant_id}\x1f{recipient_id}".encode()
    return hashlib.md5(data, usedforsecurity=False).hexdigest()[:16]


def mark_payload(key: str, action: InboxAction) -> str:
    return f"mark {key} {action}"


@dataclass(frozen=True)
class Change:
    """A parsed inbox payload: a new ``item`` (with its id) or a ``mark`` (with its action)."""

    kind: Literal["item", "mark"]
    key: str
    notification_id: uuid.UUID | None = None
    action: str | None = None


def parse_payload(payload: str) -> Change | None:
    """The change a payload announces; ``None`` for one this version does not know."""
    parts = payload.split(" ")
    if len(parts) != 3:
        return None
    kind, key, detail = parts
    if kind == "item":
        try:
            return Change("item", key, notification_id=uuid.UUID(detail))
        except ValueError:
            return None
    if kind == "mark" and detail in ACTIONS:
        return Change("mark", key, action=detail)
    return None


# -- arguments ------------------------------------------------------------------------------


def _inbox_of(tenant_id: Any, recipient_id: Any) -> tuple[str, str]:
    return (
        identifier("tenant_id", tenant_id, InvalidArgument),
        identifier("recipient_id", recipient_id, InvalidArgument),
    )


def _ids(values: Any) -> list[uuid.UUID]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise InvalidArgument('notification_ids must be a list of ids or "all"')
    if not 1 <= len(values) <= MAX_MARK_IDS:
        raise InvalidArgument(
            f"notification_ids must hold 1 to {MAX_MARK_IDS} ids, got {len(values)}"
        )
    ids = []
    for index, value in enumerate(values):
        if isinstance(value, uuid.UUID):
            ids.append(value)
            continue
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            raise InvalidArgument(f"notification_ids[{index}] is not a UUID") from None
    return sorted(set(ids))
