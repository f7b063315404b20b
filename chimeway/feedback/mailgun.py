"""Mailgun webhooks (JSON: a ``signature`` object and the ``event-data``).

Verification, per "Securing Webhooks"
(https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks):
``signature.signature`` is the hex HMAC-SHA256 of ``timestamp`` followed by ``token`` (no
separator) under the domain's HTTP webhook signing key. Events of a subaccount also carry
``parent-signature``, made with the primary account's key; either may match. Mailgun signs
only the timestamp and token, not the event data, and warns that webhook processing can be
delayed outside its control; so the timestamp check is looser than elsewhere (15 minutes by
default) and duplicates are made inert by the event ``id`` instead.

Payload, per "Webhook Payloads"
(https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads):
``event-data.event`` is accepted, delivered, failed, opened, clicked, unsubscribed,
complained, ...; ``id`` identifies the event; ``timestamp`` is Unix seconds with a
fraction; a failure's ``severity`` is ``permanent`` or ``temporary``; ``message.headers``
holds the ``message-id`` (Mailgun's id of the message, or ours when sent over SMTP with
``<delivery-id@domain>``); ``user-variables`` holds what the send attached, where Chimeway
puts ``chimeway_delivery_id``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from chimeway.errors import ConfigurationError
from chimeway.feedback import parsing
from chimeway.feedback.errors import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.types import DELIVERY_ID_KEY, FeedbackEvent, FeedbackKind
from chimeway.feedback.verifying import Clock, check_fresh, utc_now

# event -> kind; "failed" is decided by its severity. Others (accepted, rejected, stored,
# list events) are left out.
EVENTS: dict[str, FeedbackKind] = {
    "delivered": FeedbackKind.DELIVERED,
    "opened": FeedbackKind.OPENED,
    "clicked": FeedbackKind.CLICKED,
    "unsubscribed": FeedbackKind.UNSUBSCRIBED,
    "complained": FeedbackKind.COMPLAINED,
}
SEVERITIES: dict[str, tuple[FeedbackKind, bool]] = {
    "permanent": (FeedbackKind.BOUNCED, True),
    "temporary": (FeedbackKind.FAILED, False),
}


class MailgunProvider:
    """Mailgun webhooks signed with the domain's HTTP webhook ``signing_key``."""

    def __init__(
        self,
        signing_key: str,
        *,
        name: str = "mailgun",
        tolerance: timedelta | None = timedelta(minutes=15),
        clock: Clock = utc_now,
    ) -> None:
        if not signing_key:
            raise ConfigurationError("the Mailgun webhook signing key is empty")
        self.name = name
        self._key = signing_key.encode()
        self._tolerance = tolerance
        self._clock = clock

    def __repr__(self) -> str:
        return f"MailgunProvider(name={self.name!r})"

    def verify(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None:
        try:
            payload = parsing.expect_object(parsing.load_json(body), "the body")
            signature = parsing.expect_object(payload.get("signature"), "signature")
        except WebhookUnparseable:
            raise WebhookUnauthorized("the body carries no signature object") from None
        timestamp, token = signature.get("timestamp"), signature.get("token")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not (isinstance(timestamp, str) and timestamp and isinstance(token, str) and token):
            raise WebhookUnauthorized("signature.timestamp or signature.token is missing")
        check_fresh(
            timestamp, field="signature.timestamp", clock=self._clock, tolerance=self._tolerance
        )
        expected = hmac.new(self._key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        matches = [
            hmac.compare_digest(expected.encode(), given.lower().encode())
            for given in (signature.get("signature"), signature.get("parent-signature"))
            if isinstance(given, str) and given.isascii()
        ]
        if not any(matches):
            raise WebhookUnauthorized("signature.signature does not match")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[FeedbackEvent]:
        payload = parsing.expect_object(parsing.load_json(body), "the body")
        data = parsing.expect_object(payload.get("event-data"), "event-data")
        name = data.get("event")
        if not isinstance(name, str):
            raise WebhookUnparseable("event-data.event is missing or not a string")
        facts: dict[str, Any] = {"event": name}
        permanent: bool | None = None
        if name == "failed":
            severity = data.get("severity")
            if not isinstance(severity, str) or severity not in SEVERITIES:
                raise WebhookUnparseable("event-data.severity is neither permanent nor temporary")
            kind, permanent = SEVERITIES[severity]
            status = data.get("delivery-status")
            status = status if isinstance(status, dict) else {}
            facts.update(severity=severity, reason=data.get("reason"), smtp_code=status.get("code"))
        elif name in EVENTS:
            kind = EVENTS[name]
        else:
            return []
        message_id = _message_id(data)
        variables = data.get("user-variables") or {}
        delivery_id = parsing.delivery_id(
            parsing.expect_object(variables, "event-data.user-variables").get(DELIVERY_ID_KEY),
            f"event-data.user-variables.{DELIVERY_ID_KEY}",
        ) or parsing.delivery_id_from_message_id(message_id)
        if delivery_id is None and message_id is None:
            return []
        return [
            FeedbackEvent(
                provider=self.name,
                provider_event_id=parsing.optional_str(data.get("id"), "event-data.id"),
                kind=kind,
                delivery_id=delivery_id,
                provider_message_id=message_id,
                occurred_at=parsing.unix_time(data.get("timestamp"), "event-data.timestamp"),
                evidence=parsing.evidence(**facts),
                permanent=permanent,
            )
        ]


def _message_id(data: dict[str, Any]) -> str | None:
    """``message.headers.message-id`` without angle brackets (the send API returns it with
    them, the webhooks without)."""
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    if not isinstance(headers, dict):
        return None
    value = parsing.optional_str(headers.get("message-id"), "event-data.message.headers.message-id")
    return value.strip().strip("<>") if value else None
