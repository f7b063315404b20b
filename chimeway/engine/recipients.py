"""The recipient directory (design §12): profiles upserted by the API or inline at trigger
time, read by planning (which addresses a recipient has) and at send time (what adapters
get), and erased on request. Addresses are personal data: nothing here logs them, puts
them in an error message or a job argument."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from chimeway import profiles
from chimeway.db import Conn
from chimeway.engine.context import Engine
from chimeway.errors import InvalidArgument, NotFound
from chimeway.inputs import identifier
from chimeway.notifiers import Recipient
from chimeway.results import Forgotten, RecipientRecord
from chimeway.store import recipients

logger = logging.getLogger(__name__)


def upsert(
    engine: Engine,
    tenant_id: str,
    recipient_id: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    timezone: str | None = None,
    data: Mapping[str, Any] | None = None,
    clear: Iterable[str] = (),
    conn: Conn | None = None,
) -> RecipientRecord:
    tenant_id = identifier("tenant_id", tenant_id, InvalidArgument)
    recipient_id = identifier("recipient_id", recipient_id, InvalidArgument)
    fields = profiles.checked(
        InvalidArgument, email=email, phone=phone, locale=locale, timezone=timezone, data=data
    )
    emptied = profiles.cleared(clear, InvalidArgument)
    both = [name for name in emptied if name in fields]
    if both:
        raise InvalidArgument(f"{both[0]} is both given and in clear; give one or the other")
    with engine.transaction(conn) as tx:
        record = recipients.upsert(tx, tenant_id, recipient_id, fields, emptied)
    logger.info(
        "recipient upserted",
        extra={
            "action": "recipient.upserted",
            "tenant_id": tenant_id,
            "recipient_id": recipient_id,
            "fields": sorted([*fields, *emptied]),  # names only, never values
        },
    )
    return record


def get(
    engine: Engine, tenant_id: str, recipient_id: str, conn: Conn | None = None
) -> RecipientRecord:
    tenant_id = identifier("tenant_id", tenant_id, InvalidArgument)
    recipient_id = identifier("recipient_id", recipient_id, InvalidArgument)
    with engine.transaction(conn) as tx:
        record = recipients.get(tx, tenant_id, recipient_id)
    if record is None:
        raise NotFound(f"recipient {recipient_id!r} has no profile")
    return record


def forget(
    engine: Engine, tenant_id: str, recipient_id: str, conn: Conn | None = None
) -> Forgotten:
    tenant_id = identifier("tenant_id", tenant_id, InvalidArgument)
    recipient_id = identifier("recipient_id", recipient_id, InvalidArgument)
    with engine.transaction(conn) as tx:
        erased = recipients.forget(tx, tenant_id, recipient_id)
    logger.info(
        "recipient forgotten",
        extra={
            "action": "recipient.forgotten",
            "tenant_id": tenant_id,
            "recipient_id": recipient_id,
            "notifications": erased.notifications,
            "deliveries": erased.deliveries,
        },
    )
    return Forgotten(
        tenant_id, recipient_id, erased.profile_deleted, erased.notifications, erased.deliveries
    )


def upsert_inline(conn: Conn, tenant_id: str, given: Sequence[Recipient]) -> None:
    """Merge the profile fields the notifier's recipients carry (already validated by
    :class:`~chimeway.Recipient`) into the directory, in the caller's transaction."""
    recipients.upsert_inline(
        conn,
        tenant_id,
        [
            recipients.Inline(
                r.id, r.email, r.phone, r.locale, r.timezone, dict(r.data) if r.data else None
            )
            for r in given
            if r.has_profile
        ],
    )


def addresses(
    conn: Conn, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], frozenset[str]]:
    """Which address fields (``email``, ``phone``) each (tenant, recipient) has; a recipient
    without a profile has none (and is left out)."""
    return {
        pair: frozenset(f for f in profiles.ADDRESS_FIELDS if getattr(record, f))
        for pair, record in recipients.for_pairs(conn, pairs).items()
    }


def timezones(conn: Conn, pairs: Collection[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The profile time zone of each (tenant, recipient) that has one."""
    return {
        pair: record.timezone
        for pair, record in recipients.for_pairs(conn, pairs).items()
        if record.timezone
    }
