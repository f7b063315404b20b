"""Postmark webhooks (one JSON record per request).

Postmark signs nothing: a webhook URL is protected with HTTP Basic authentication, whose
credentials Postmark sends in the ``Authorization`` header ("Add up to 10 different URLs and
secure them using HTTP Auth", https://postmarkapp.com/email-webhooks). They are compared in
constant time.

Records, as documented at https://postmarkapp.com/developer/webhooks/ (delivery, bounce,
spam complaint, open tracking, click tracking and subscription change webhooks):
``RecordType`` is Delivery, Bounce, SpamComplaint, Open, Click or SubscriptionChange;
``MessageID`` is Postmark's id of the message (the one its send API returns); ``Metadata`` is
what the send attached, where Chimeway puts ``chimeway_delivery_id``. A Bounce's ``Type``
comes from Postmark's bounce types (the ``BounceType`` enum of the official ``postmark``
client). Bounce and SpamComplaint records carry an ``ID``; the others have none, so their
event id is built from the record type, message id and event time, which a retry repeats.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from chimeway.feedback import parsing
from chimeway.feedback.errors import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.types import DELIVERY_ID_KEY, FeedbackEvent, FeedbackKind
from chimeway.feedback.verifying import required_header

# Bounce Type -> (kind, permanent). Types absent here (Subscribe, AutoResponder,
# AddressChange, OpenRelayTest, ChallengeVerification, InboundError, and any new one) say
# nothing about the fate of the message and are left out.
BOUNCE_TYPES: dict[str, tuple[FeedbackKind, bool | None]] = {
    "HardBounce": (FeedbackKind.BOUNCED, True),
    "BadEmailAddress": (FeedbackKind.BOUNCED, True),
    "ManuallyDeactivated": (FeedbackKind.BOUNCED, True),
    "Transient": (FeedbackKind.FAILED, False),
    "SoftBounce": (FeedbackKind.FAILED, False),
    "DnsError": (FeedbackKind.FAILED, False),
    "SpamNotification": (FeedbackKind.FAILED, True),
    "VirusNotification": (FeedbackKind.FAILED, True),
    "Blocked": (FeedbackKind.FAILED, True),
    "DMARCPolicy": (FeedbackKind.FAILED, True),
    "SMTPApiError": (FeedbackKind.FAILED, True),
    "Unconfirmed": (FeedbackKind.FAILED, True),
    "TemplateRenderingFailed": (FeedbackKind.FAILED, True),
    "Unknown": (FeedbackKind.FAILED, None),
    "SpamComplaint": (FeedbackKind.COMPLAINED, None),
    "Unsubscribe": (FeedbackKind.UNSUBSCRIBED, None),
}

# RecordType -> the field holding the event time.
_TIME_FIELDS = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


class PostmarkProvider:
    """Postmark webhooks protected by HTTP Basic ``username`` and ``password``."""

    def __init__(self, username: str, password: str, *, name: str = "postmark") -> None:
        self.name = name
        self._username = username.encode()
        self._password = password.encode()

    def __repr__(self) -> str:
        return f"PostmarkProvider(name={self.name!r})"

    def verify(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None:
        scheme, _, credentials = required_header(headers, "Authorization").partition(" ")
        if scheme.lower() != "basic":
            raise WebhookUnauthorized("the Authorization header is not HTTP Basic")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookUnauthorized("the Authorization header is not valid base64") from None
        username, colon, password = decoded.partition(b":")
        # Both comparisons always run, so the time taken says nothing about which failed.
        same_user = hmac.compare_digest(username, self._username)
        same_password = hmac.compare_digest(password, self._password)
        if not (colon and same_user and same_password):
            raise WebhookUnauthorized("the Basic credentials do not match")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[FeedbackEvent]:
        record = parsing.expect_object(parsing.load_json(body), "the body")
        record_type = record.get("RecordType")
        if not isinstance(record_type, str):
            raise WebhookUnparseable("RecordType is missing or not a string")
        if record_type not in _TIME_FIELDS:
            return []  # Inbound and other records are not about a message we sent
        decided = self._decide(record_type, record)
        if decided is None:
            return []
        kind, permanent, facts = decided
        message_id = parsing.optional_str(record.get("MessageID"), "MessageID")
        metadata = record.get("Metadata") or {}
        delivery_id = parsing.delivery_id(
            parsing.expect_object(metadata, "Metadata").get(DELIVERY_ID_KEY),
            f"Metadata.{DELIVERY_ID_KEY}",
        )
        if delivery_id is None and message_id is None:
            return []  # e.g. a manual suppression, which names no message
        time_field = _TIME_FIELDS[record_type]
        occurred_text = parsing.optional_str(record.get(time_field), time_field)
        return [
            FeedbackEvent(
                provider=self.name,
                provider_event_id=_event_id(record, record_type, message_id, occurred_text),
                kind=kind,
                delivery_id=delivery_id,
                provider_message_id=message_id,
                occurred_at=parsing.iso_time(occurred_text, time_field),
                evidence=parsing.evidence(record_type=record_type, **facts),
                permanent=permanent,
            )
        ]

    @staticmethod
    def _decide(
        record_type: str, record: dict[str, Any]
    ) -> tuple[FeedbackKind, bool | None, dict[str, Any]] | None:
        """(kind, permanent, evidence facts) of a record, or ``None`` to leave it out."""
        if record_type == "Delivery":
            return FeedbackKind.DELIVERED, None, {}
        if record_type in ("Bounce", "SpamComplaint"):
            bounce_type = record.get("Type")
            if not isinstance(bounce_type, str):
                raise WebhookUnparseable("Type is missing or not a string")
            if bounce_type not in BOUNCE_TYPES:
                return None
            kind, permanent = BOUNCE_TYPES[bounce_type]
            facts = {"bounce_type": bounce_type, "type_code": record.get("TypeCode")}
            return kind, permanent, facts
        if record_type == "Open":
            return FeedbackKind.OPENED, None, {"first_open": record.get("FirstOpen")}
        if record_type == "Click":
            return FeedbackKind.CLICKED, None, {"click_location": record.get("ClickLocation")}
        # SubscriptionChange: SuppressSending false is a reactivation, not feedback.
        if record.get("SuppressSending") is not True:
            return None
        facts = {
            "suppression_reason": record.get("SuppressionReason"),
            "origin": record.get("Origin"),
        }
        return FeedbackKind.UNSUBSCRIBED, None, facts


def _event_id(
    record: dict[str, Any], record_type: str, message_id: str | None, occurred: str | None
) -> str:
    record_id = record.get("ID")
    if isinstance(record_id, int | str) and not isinstance(record_id, bool) and record_id != "":
        return f"{record_type}:{record_id}"
    return f"{record_type}:{message_id or ''}:{occurred or ''}"
