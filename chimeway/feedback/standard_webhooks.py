"""Delivery receipts posted back by the receivers of Chimeway's webhook adapter, signed per
the Standard Webhooks specification.

Verification (https://www.standardwebhooks.com/, "Verifying webhooks"; the same steps in
every library the project publishes): the headers ``webhook-id``, ``webhook-timestamp``
(Unix seconds) and ``webhook-signature`` are required; the timestamp must be within a
tolerance of now (5 minutes, as the specification recommends); the signature header holds
one or more space-separated ``v1,<base64>`` entries, each an HMAC-SHA256 of
``{webhook-id}.{webhook-timestamp}.{raw body}`` under the secret, which is given as
``whsec_`` followed by its base64 encoding. One matching entry authenticates the request;
entries of other versions are ignored.

The payload is Chimeway's own receipt format (docs/receiving-webhooks.md)::

    {"type": "message.bounced", "timestamp": "2025-05-01T12:00:00Z",
     "data": {"delivery_id": "…", "provider_message_id": "…", "permanent": true,
              "code": "mailbox_unknown"}}

The ``webhook-id`` header is the event id: the specification keeps it across retries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta

from chimeway.errors import ConfigurationError
from chimeway.feedback import parsing
from chimeway.feedback.errors import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.types import FeedbackEvent, FeedbackKind
from chimeway.feedback.verifying import (
    Clock,
    check_fresh,
    header,
    required_header,
    utc_now,
)

SECRET_PREFIX = "whsec_"

# Receipt type -> (kind, permanence when the receipt does not say).
RECEIPT_TYPES: dict[str, tuple[FeedbackKind, bool | None]] = {
    "message.delivered": (FeedbackKind.DELIVERED, None),
    "message.bounced": (FeedbackKind.BOUNCED, True),
    "message.failed": (FeedbackKind.FAILED, None),
    "message.complained": (FeedbackKind.COMPLAINED, None),
    "message.opened": (FeedbackKind.OPENED, None),
    "message.clicked": (FeedbackKind.CLICKED, None),
    "message.unsubscribed": (FeedbackKind.UNSUBSCRIBED, None),
}


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a Standard Webhooks secret: raw bytes as given, or a string decoded
    from base64 after an optional ``whsec_`` prefix."""
    if isinstance(secret, bytes):
        key = secret
    else:
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                "the Standard Webhooks secret must be 'whsec_' followed by base64"
            ) from None
    if not key:
        raise ConfigurationError("the Standard Webhooks secret is empty")
    return key


class StandardWebhooksProvider:
    """Receipts signed per Standard Webhooks with ``secret`` (``whsec_…``)."""

    def __init__(
        self,
        secret: str | bytes,
        *,
        name: str = "standard_webhooks",
        tolerance: timedelta = timedelta(minutes=5),
        clock: Clock = utc_now,
    ) -> None:
        self.name = name
        self._key = secret_key(secret)
        self._tolerance = tolerance
        self._clock = clock

    def __repr__(self) -> str:
        return f"StandardWebhooksProvider(name={self.name!r})"

    def verify(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None:
        webhook_id = required_header(headers, "webhook-id")
        timestamp = required_header(headers, "webhook-timestamp")
        signatures = required_header(headers, "webhook-signature")
        check_fresh(
            timestamp, field="webhook-timestamp", clock=self._clock, tolerance=self._tolerance
        )
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest())
        for entry in signatures.split():
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(expected, value.encode()):
                return
        raise WebhookUnauthorized("no webhook-signature entry matches the body")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[FeedbackEvent]:
        receipt = parsing.expect_object(parsing.load_json(body), "the body")
        receipt_type = receipt.get("type")
        if not isinstance(receipt_type, str):
            raise WebhookUnparseable("type is missing or not a string")
        data = parsing.expect_object(receipt.get("data"), "data")
        if receipt_type not in RECEIPT_TYPES:
            return []  # a type this version does not know: accepted, nothing to record
        kind, permanent = RECEIPT_TYPES[receipt_type]
        delivery_id = parsing.delivery_id(data.get("delivery_id"), "data.delivery_id")
        message_id = parsing.optional_str(
            data.get("provider_message_id"), "data.provider_message_id"
        )
        if delivery_id is None and message_id is None:
            raise WebhookUnparseable("data.delivery_id or data.provider_message_id is required")
        if kind is FeedbackKind.FAILED:
            stated = data.get("permanent")
            if stated is not None and not isinstance(stated, bool):
                raise WebhookUnparseable("data.permanent is not a boolean")
            permanent = stated
        code = parsing.optional_str(data.get("code"), "data.code")
        return [
            FeedbackEvent(
                provider=self.name,
                provider_event_id=header(headers, "webhook-id"),
                kind=kind,
                delivery_id=delivery_id,
                provider_message_id=message_id,
                occurred_at=parsing.iso_time(receipt.get("timestamp"), "timestamp"),
                evidence=parsing.evidence(type=receipt_type, code=code),
                permanent=permanent,
            )
        ]
