"""SendGrid (Twilio SendGrid) Event Webhook.

Verification, per "Getting Started with the Event Webhook Security Features"
(https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features):
with the Signed Event Webhook on, SendGrid signs each POST with an ECDSA key pair (P-256,
SHA-256) and sends the base64 DER signature in ``X-Twilio-Email-Event-Webhook-Signature``
and the time in ``X-Twilio-Email-Event-Webhook-Timestamp``; the signed payload is the
timestamp followed by the raw body. The verification key is shown under Mail Settings as a
base64 DER public key (PEM is accepted too). SendGrid documents no tolerance for the
timestamp; we refuse one more than 5 minutes from now by default.

Payload, per the "Event Webhook Reference"
(https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event): a JSON array of
events, each with ``event``, ``timestamp`` (Unix seconds), ``sg_event_id`` (stable across
retries) and ``sg_message_id`` (the ``X-Message-Id`` that the send API returned, followed by
a ``.filter…`` suffix, per the "X-Message-ID" and "Message ID" glossary entries). Custom
arguments of the send appear as top-level fields: Chimeway reads ``chimeway_delivery_id``
there. ``smtp-id`` is not used: SendGrid may replace the
Message-ID.

Mapping: processed, deferred and group_resubscribe are left out. ``deferred`` is left out on
purpose: SendGrid keeps retrying the message itself for up to 72 hours and reports the end as
delivered, bounce or dropped; reporting each deferral as a failure would let Chimeway send a
second copy while SendGrid still delivers the first.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from chimeway.errors import ConfigurationError
from chimeway.feedback import parsing
from chimeway.feedback.errors import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.types import DELIVERY_ID_KEY, FeedbackEvent, FeedbackKind
from chimeway.feedback.verifying import Clock, check_fresh, required_header, utc_now

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_SUFFIX = re.compile(r"\.(?:filter|recvd)")

# event -> (kind, permanent); "bounce" is decided by its "type" (bounce or blocked).
EVENTS: dict[str, tuple[FeedbackKind, bool | None]] = {
    "delivered": (FeedbackKind.DELIVERED, None),
    "dropped": (FeedbackKind.FAILED, True),
    "spamreport": (FeedbackKind.COMPLAINED, None),
    "unsubscribe": (FeedbackKind.UNSUBSCRIBED, None),
    "group_unsubscribe": (FeedbackKind.UNSUBSCRIBED, None),
    "open": (FeedbackKind.OPENED, None),
    "click": (FeedbackKind.CLICKED, None),
}
# A "bounce" event's "type": a bounce is permanent, a block is the receiving server refusing
# the message for now (SendGrid does not retry it).
BOUNCE_TYPES: dict[str, tuple[FeedbackKind, bool]] = {
    "bounce": (FeedbackKind.BOUNCED, True),
    "blocked": (FeedbackKind.FAILED, False),
}


def x_message_id(sg_message_id: str | None) -> str | None:
    """The ``X-Message-Id`` the send API returned: ``sg_message_id`` without the suffix
    SendGrid's mail servers add (``.filter…`` or ``.recvd…``)."""
    if sg_message_id is None:
        return None
    return _SUFFIX.split(sg_message_id, maxsplit=1)[0]


def load_public_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """The P-256 verification key from SendGrid's base64 DER text (or PEM)."""
    try:
        if public_key.lstrip().startswith("-----BEGIN"):
            key = load_pem_public_key(public_key.encode())
        else:
            key = load_der_public_key(base64.b64decode(public_key.strip(), validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise ConfigurationError(
            "the SendGrid verification key is not a base64 DER or PEM public key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError("the SendGrid verification key is not an ECDSA P-256 key")
    return key


class SendGridProvider:
    """SendGrid's Signed Event Webhook, verified with the ``public_key`` SendGrid shows."""

    def __init__(
        self,
        public_key: str,
        *,
        name: str = "sendgrid",
        tolerance: timedelta | None = timedelta(minutes=5),
        clock: Clock = utc_now,
    ) -> None:
        self.name = name
        self._key = load_public_key(public_key)
        self._tolerance = tolerance
        self._clock = clock

    def __repr__(self) -> str:
        return f"SendGridProvider(name={self.name!r})"

    def verify(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None:
        signature = required_header(headers, SIGNATURE_HEADER)
        timestamp = required_header(headers, TIMESTAMP_HEADER)
        check_fresh(timestamp, field=TIMESTAMP_HEADER, clock=self._clock, tolerance=self._tolerance)
        try:
            der = base64.b64decode(signature, validate=True)
            self._key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookUnauthorized(f"the {SIGNATURE_HEADER} does not match the body") from None

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[FeedbackEvent]:
        batch = parsing.load_json(body)
        if not isinstance(batch, list):
            raise WebhookUnparseable("the body is not a JSON array of events")
        events = []
        for index, item in enumerate(batch):
            event = self._event(parsing.expect_object(item, f"event [{index}]"), index)
            if event is not None:
                events.append(event)
        return events

    def _event(self, item: dict[str, Any], index: int) -> FeedbackEvent | None:
        where = f"event [{index}]"
        name = item.get("event")
        if not isinstance(name, str):
            raise WebhookUnparseable(f"{where}.event is missing or not a string")
        facts: dict[str, Any] = {"event": name}
        kind: FeedbackKind
        permanent: bool | None
        if name == "bounce":
            bounce_type = item.get("type", "bounce")
            if not isinstance(bounce_type, str) or bounce_type not in BOUNCE_TYPES:
                raise WebhookUnparseable(f"{where}.type is neither bounce nor blocked")
            kind, permanent = BOUNCE_TYPES[bounce_type]
            facts.update(
                type=bounce_type,
                status=item.get("status"),
                bounce_classification=item.get("bounce_classification"),
            )
        elif name in EVENTS:
            kind, permanent = EVENTS[name]
            if name == "dropped":
                facts["reason"] = item.get("reason")  # one of a fixed list, e.g. "Bounced Address"
            elif name == "group_unsubscribe":
                facts["asm_group_id"] = item.get("asm_group_id")
            elif name == "open":
                facts["machine_open"] = item.get("sg_machine_open")
        else:
            return None  # processed, deferred, group_resubscribe, account events
        sg_message_id = parsing.optional_str(item.get("sg_message_id"), f"{where}.sg_message_id")
        delivery_id = parsing.delivery_id(item.get(DELIVERY_ID_KEY), f"{where}.{DELIVERY_ID_KEY}")
        if delivery_id is None and sg_message_id is None:
            return None
        return FeedbackEvent(
            provider=self.name,
            provider_event_id=parsing.optional_str(item.get("sg_event_id"), f"{where}.sg_event_id"),
            kind=kind,
            delivery_id=delivery_id,
            provider_message_id=x_message_id(sg_message_id),
            occurred_at=parsing.unix_time(item.get("timestamp"), f"{where}.timestamp"),
            evidence=parsing.evidence(**facts),
            permanent=permanent,
        )
