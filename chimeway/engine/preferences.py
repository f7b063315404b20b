"""Preferences and policy settings (design §13): what ``cw.preferences`` reads and writes,
and unsubscribe links.

Everything is per tenant. A recipient's own rule, quiet hours or cap wins over the tenant's
default (``recipient_id`` ``None``) of the same scope; planning reads them all at once
(:mod:`chimeway.engine.planning`). An unsubscribe link carries a signed token
(:class:`chimeway.policy.TokenSigner`, the app's secrets) naming the tenant, the recipient
and the scope to turn off: the message's channel for its category (or its workflow), the
same rule a provider's complaint or unsubscribe webhook writes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from chimeway.db import Conn
from chimeway.engine.context import Engine
from chimeway.errors import ConfigurationError, InvalidArgument
from chimeway.inputs import identifier
from chimeway.policy import (
    CapRule,
    PreferenceScope,
    PreferenceUpdate,
    QuietHours,
    TokenSigner,
    UnsubscribeClaims,
    unsubscribe_scope,
    zone_for,
)
from chimeway.results import (
    CapSetting,
    Delivery,
    PreferenceRecord,
    QuietHoursSetting,
    RecipientPreferences,
)
from chimeway.store import clock, policy, preferences
from chimeway.store.preferences import NewRule, Preference

logger = logging.getLogger(__name__)

#: ``source`` of rules set through this API, and by an unsubscribe link.
API = "api"
LINK = "unsubscribed:link"
#: The path of unsubscribe links under the app's ``public_url``.
UNSUBSCRIBE_PATH = "/v1/unsubscribe/"


def set_rule(
    engine: Engine,
    tenant_id: str,
    recipient_id: str | None,
    *,
    enabled: bool,
    channel: str | None = None,
    category: str | None = None,
    workflow: str | None = None,
    conn: Conn | None = None,
) -> PreferenceRecord:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    scope = _scope(channel, category, workflow)
    if not isinstance(enabled, bool):
        raise InvalidArgument(f"enabled must be True or False, got {enabled!r}")
    with engine.transaction(conn) as tx:
        row = preferences.set_rule(
            tx,
            tenant_id=tenant_id,
            recipient_id=recipient_id,
            channel=scope.channel,
            category=scope.category,
            workflow=scope.workflow,
            enabled=enabled,
            source=API,
        )
        record = row if row is not None else _current(tx, tenant_id, recipient_id, scope)
    _log("preference.set", tenant_id, recipient_id, scope=_scope_name(scope), enabled=enabled)
    return _record(record)


def set_many(
    engine: Engine,
    tenant_id: str,
    updates: Iterable[PreferenceUpdate],
    conn: Conn | None = None,
) -> list[PreferenceRecord]:
    tenant_id = identifier("tenant_id", tenant_id, InvalidArgument)
    rules: list[NewRule] = []
    seen: set[tuple[str | None, PreferenceScope]] = set()
    for index, update in enumerate(updates):
        if not isinstance(update, PreferenceUpdate):
            raise InvalidArgument(
                f"updates[{index}]: expected a PreferenceUpdate, got {type(update).__name__}"
            )
        _, recipient_id = _owner(tenant_id, update.recipient_id, f"updates[{index}].recipient_id")
        scope = _scope(update.scope.channel, update.scope.category, update.scope.workflow)
        if (recipient_id, scope) in seen:
            raise InvalidArgument(
                f"updates[{index}]: the same recipient and scope appear twice; give each once"
            )
        seen.add((recipient_id, scope))
        rules.append(
            NewRule(recipient_id, scope.channel, scope.category, scope.workflow, update.enabled)
        )
    if not rules:
        return []
    with engine.transaction(conn) as tx:
        rows = preferences.set_many(tx, tenant_id, rules, source=API)
    _log("preference.set_many", tenant_id, None, rules=len(rows))
    return [_record(row) for row in rows]


def reset_rule(
    engine: Engine,
    tenant_id: str,
    recipient_id: str | None,
    *,
    channel: str | None = None,
    category: str | None = None,
    workflow: str | None = None,
    conn: Conn | None = None,
) -> bool:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    scope = _scope(channel, category, workflow)
    with engine.transaction(conn) as tx:
        return preferences.delete(
            tx,
            tenant_id=tenant_id,
            recipient_id=recipient_id,
            channel=scope.channel,
            category=scope.category,
            workflow=scope.workflow,
        )


def get(
    engine: Engine, tenant_id: str, recipient_id: str | None, conn: Conn | None = None
) -> RecipientPreferences:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    with engine.transaction(conn) as tx:
        rules = preferences.list_for(tx, tenant_id, recipient_id)
        quiet = policy.quiet_hours_list(tx, tenant_id, recipient_id)
        caps = policy.caps_list(tx, tenant_id, recipient_id)
    own = recipient_id is not None

    def mine(row_recipient: str | None) -> bool:
        return own and row_recipient is not None

    quiet_own = [_quiet(q) for q in quiet if mine(q.recipient_id)]
    quiet_default = [_quiet(q) for q in quiet if q.recipient_id is None]
    return RecipientPreferences(
        tenant_id=tenant_id,
        recipient_id=recipient_id,
        rules=[_record(r) for r in rules if mine(r.recipient_id)],
        default_rules=[_record(r) for r in rules if r.recipient_id is None],
        quiet_hours=quiet_own[0] if quiet_own else None,
        default_quiet_hours=quiet_default[0] if quiet_default else None,
        caps=[_cap(c) for c in caps if mine(c.recipient_id)],
        default_caps=[_cap(c) for c in caps if c.recipient_id is None],
    )


def set_quiet_hours(
    engine: Engine,
    tenant_id: str,
    recipient_id: str | None,
    start: dt.time | None,
    end: dt.time | None,
    *,
    timezone: str | None = None,
    conn: Conn | None = None,
) -> QuietHoursSetting:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    if timezone is not None:
        zone_for(timezone)
    if (start is None) != (end is None):
        raise InvalidArgument("start and end: give both (a window) or neither (no quiet hours)")
    if start is not None and end is not None:
        QuietHours(start, end, timezone or "UTC")  # checks the window
    with engine.transaction(conn) as tx:
        row = policy.quiet_hours_set(tx, tenant_id, recipient_id, start, end, timezone)
    _log("quiet_hours.set", tenant_id, recipient_id, window=start is not None)
    return _quiet(row)


def reset_quiet_hours(
    engine: Engine, tenant_id: str, recipient_id: str | None, conn: Conn | None = None
) -> bool:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    with engine.transaction(conn) as tx:
        return policy.quiet_hours_delete(tx, tenant_id, recipient_id)


def set_cap(
    engine: Engine,
    tenant_id: str,
    recipient_id: str | None,
    max_count: int | None,
    per: dt.timedelta | None,
    *,
    channel: str | None = None,
    conn: Conn | None = None,
) -> CapSetting:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    if channel is not None:
        identifier("channel", channel, InvalidArgument)
    if max_count is None:
        if per is not None:
            raise InvalidArgument("per: give it with max_count (None means no cap)")
    else:
        if per is None:
            raise InvalidArgument("per: a cap needs its window (a timedelta)")
        CapRule(max_count, per, channel)  # checks the rule
    with engine.transaction(conn) as tx:
        row = policy.cap_set(tx, tenant_id, recipient_id, channel, max_count, per)
    _log("cap.set", tenant_id, recipient_id, channel=channel, max_count=max_count)
    return _cap(row)


def reset_cap(
    engine: Engine,
    tenant_id: str,
    recipient_id: str | None,
    *,
    channel: str | None = None,
    conn: Conn | None = None,
) -> bool:
    tenant_id, recipient_id = _owner(tenant_id, recipient_id)
    if channel is not None:
        identifier("channel", channel, InvalidArgument)
    with engine.transaction(conn) as tx:
        return policy.cap_delete(tx, tenant_id, recipient_id, channel)


# -- unsubscribe ----------------------------------------------------------------------------


def unsubscribe_token(
    engine: Engine,
    tenant_id: str,
    recipient_id: str,
    *,
    channel: str | None = None,
    category: str | None = None,
    workflow: str | None = None,
    ttl: dt.timedelta | None = None,
    conn: Conn | None = None,
) -> str:
    tenant_id = identifier("tenant_id", tenant_id, InvalidArgument)
    recipient_id = identifier("recipient_id", recipient_id, InvalidArgument)
    scope = _scope(channel, category, workflow)
    life = engine.settings.unsubscribe_ttl if ttl is None else ttl
    if not isinstance(life, dt.timedelta) or life <= dt.timedelta(0):
        raise InvalidArgument(f"ttl must be a positive timedelta, got {life!r}")
    with engine.transaction(conn) as tx:
        now = clock.now(tx)
    return _signer(engine).sign_unsubscribe(
        UnsubscribeClaims(tenant_id, recipient_id, scope, now + life)
    )


def unsubscribe_url_for(engine: Engine, token: str) -> str:
    if engine.public_url is None:
        raise ConfigurationError(
            "unsubscribe links need public_url= on Chimeway: where `chimeway serve` is reached"
        )
    return f"{engine.public_url}{UNSUBSCRIBE_PATH}{quote(token, safe='')}"


def send_unsubscribe_url(engine: Engine, delivery: Delivery) -> str | None:
    """The one-click link for a send, valid ``unsubscribe_ttl`` from its claim: ``None`` for
    a critical notifier (one cannot opt out of it) and when the app has no secret or no
    ``public_url``."""
    if delivery.critical or engine.signer is None or engine.public_url is None:
        return None
    scope = unsubscribe_scope(
        delivery.channel, category=delivery.category, workflow=delivery.workflow_key
    )
    expires = delivery.status_changed_at + engine.settings.unsubscribe_ttl
    token = engine.signer.sign_unsubscribe(
        UnsubscribeClaims(delivery.tenant_id, delivery.recipient_id, scope, expires)
    )
    return unsubscribe_url_for(engine, token)


def check_unsubscribe(engine: Engine, token: str, conn: Conn | None = None) -> UnsubscribeClaims:
    """The claims of a valid, unexpired token (on the database's clock); InvalidToken or
    TokenExpired otherwise. Writes nothing: the confirmation page of a link."""
    with engine.transaction(conn) as tx:
        now = clock.now(tx)
    return _signer(engine).verify_unsubscribe(token, now=now)


def unsubscribe(engine: Engine, token: str, conn: Conn | None = None) -> PreferenceRecord:
    """Turn off what the token names (one click, RFC 8058), as of now: the rule set."""
    signer = _signer(engine)
    with engine.transaction(conn) as tx:
        claims = signer.verify_unsubscribe(token, now=clock.now(tx))
        scope = claims.scope
        row = preferences.set_rule(
            tx,
            tenant_id=claims.tenant_id,
            recipient_id=claims.recipient_id,
            channel=scope.channel,
            category=scope.category,
            workflow=scope.workflow,
            enabled=False,
            source=LINK,
        )
        record = (
            row if row is not None else _current(tx, claims.tenant_id, claims.recipient_id, scope)
        )
    _log("preference.unsubscribed", claims.tenant_id, claims.recipient_id, scope=_scope_name(scope))
    return _record(record)


# -- helpers --------------------------------------------------------------------------------


def _signer(engine: Engine) -> TokenSigner:
    if engine.signer is None:
        raise ConfigurationError(
            "unsubscribe tokens need a secret: Chimeway(secret=...) with at least 32 bytes"
        )
    return engine.signer


def _owner(
    tenant_id: str, recipient_id: str | None, name: str = "recipient_id"
) -> tuple[str, str | None]:
    tenant_id = identifier("tenant_id", tenant_id, InvalidArgument)
    if recipient_id is not None:
        recipient_id = identifier(name, recipient_id, InvalidArgument)
    return tenant_id, recipient_id


def _scope(channel: str | None, category: str | None, workflow: str | None) -> PreferenceScope:
    for name, value in (("channel", channel), ("category", category), ("workflow", workflow)):
        if value is not None:
            identifier(name, value, InvalidArgument)
    return PreferenceScope(channel, category, workflow)


def _current(
    conn: Conn, tenant_id: str, recipient_id: str | None, scope: PreferenceScope
) -> Preference:
    """The rule of ``scope`` that a write dated earlier than it left in place."""
    for row in preferences.list_for(conn, tenant_id, recipient_id):
        if (
            row.recipient_id == recipient_id
            and PreferenceScope(row.channel, row.category, row.workflow) == scope
        ):
            return row
    raise AssertionError("a rule kept in place must exist")


def _record(row: Preference) -> PreferenceRecord:
    return PreferenceRecord(
        tenant_id=row.tenant_id,
        recipient_id=row.recipient_id,
        channel=row.channel,
        category=row.category,
        workflow=row.workflow,
        enabled=row.enabled,
        set_at=row.set_at,
        source=row.source,
    )


def _quiet(row: policy.QuietHoursRow) -> QuietHoursSetting:
    return QuietHoursSetting(
        row.tenant_id, row.recipient_id, row.start_time, row.end_time, row.timezone, row.set_at
    )


def _cap(row: policy.CapRow) -> CapSetting:
    return CapSetting(
        row.tenant_id, row.recipient_id, row.channel, row.max_count, row.per, row.set_at
    )


def _scope_name(scope: PreferenceScope) -> str:
    parts = {"channel": scope.channel, "category": scope.category, "workflow": scope.workflow}
    return ",".join(f"{k}={v}" for k, v in parts.items() if v is not None)


def _log(action: str, tenant_id: str, recipient_id: str | None, **details: Any) -> None:
    logger.info(
        action.replace(".", " ").replace("_", " "),
        extra={"action": action, "tenant_id": tenant_id, "recipient_id": recipient_id, **details},
    )
