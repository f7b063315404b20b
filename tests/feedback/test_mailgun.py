"""Mailgun: HMAC-SHA256 of timestamp + token, and each event as Mailgun documents it."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chimeway.errors import ConfigurationError
from chimeway.feedback import (
    FeedbackKind,
    MailgunProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from tests.feedback.support import assert_no_personal_data, clock_at

SIGNING_KEY = "key-7e55d003b4ba60aa8ed2ec2f33ad06bd"
NOW = 1_529_006_900
DELIVERY_ID = uuid.UUID("9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
MAILGUN_MESSAGE_ID = "20130503182626.18666.16540@sandbox.mailgun.org"
TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"


def signature(timestamp: str, token: str = TOKEN, key: str = SIGNING_KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def event_data(name: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": name,
        "id": event_id,
        "timestamp": 1529006854.329574,
        "log-level": "info",
        "envelope": {
            "sender": "sender@example.com",
            "targets": "john@example.com",
            "transport": "smtp",
            "sending-ip": "188.2.95.4",
        },
        "message": {
            "headers": {
                "to": "John <john@example.com>",
                "message-id": MAILGUN_MESSAGE_ID,
                "from": "Sender <sender@example.com>",
                "subject": "Your password reset",
            },
            "attachments": [],
            "size": 111,
        },
        "recipient": "john@example.com",
        "recipient-domain": "example.com",
        "tags": ["reset"],
        "campaigns": [],
        "user-variables": {"chimeway_delivery_id": str(DELIVERY_ID)},
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        **fields,
    }


FAILED_STATUS = {
    "attempt-no": 1,
    "message": "",
    "code": 550,
    "description": "5.1.1 The email account john@example.com does not exist",
    "session-seconds": 0.1,
}
SAMPLES = {
    "delivered": event_data(
        "delivered",
        "CPgfbmQMTCKtHW6uIWtuVe",
        **{
            "delivery-status": {
                "tls": True,
                "code": 250,
                "message": "OK",
                "mx-host": "smtp-in.example.com",
            }
        },
    ),
    "failed-permanent": event_data(
        "failed",
        "G9Bn5sl1TC6nu79C8C0bwg",
        severity="permanent",
        reason="bounce",
        **{"log-level": "error", "delivery-status": FAILED_STATUS},
    ),
    "failed-temporary": event_data(
        "failed",
        "Fs7-5t81S2ScsUnJeDjFYw",
        severity="temporary",
        reason="generic",
        **{"log-level": "warn", "delivery-status": {**FAILED_STATUS, "code": 452}},
    ),
    "opened": event_data(
        "opened",
        "Ase7i2zsRYeDXztHGENqRA",
        ip="188.2.95.4",
        geolocation={"country": "RS", "city": "Novi Sad"},
        **{"client-info": {"client-type": "browser", "user-agent": "Mozilla/5.0 (X11)"}},
    ),
    "clicked": event_data(
        "clicked",
        "Ase7i2zsRYeDXztHGENqRB",
        ip="188.2.95.4",
        url="https://example.com/reset?token=abc123",
        **{"client-info": {"client-type": "browser", "user-agent": "Mozilla/5.0 (X11)"}},
    ),
    "unsubscribed": event_data("unsubscribed", "Ase7i2zsRYeDXztHGENqRC", ip="188.2.95.4"),
    "complained": event_data("complained", "-Agny091SquKnsrW2NEKUA"),
}
EXPECTED = {
    "delivered": (FeedbackKind.DELIVERED, None, {"event": "delivered"}),
    "failed-permanent": (
        FeedbackKind.BOUNCED,
        True,
        {"event": "failed", "severity": "permanent", "reason": "bounce", "smtp_code": 550},
    ),
    "failed-temporary": (
        FeedbackKind.FAILED,
        False,
        {"event": "failed", "severity": "temporary", "reason": "generic", "smtp_code": 452},
    ),
    "opened": (FeedbackKind.OPENED, None, {"event": "opened"}),
    "clicked": (FeedbackKind.CLICKED, None, {"event": "clicked"}),
    "unsubscribed": (FeedbackKind.UNSUBSCRIBED, None, {"event": "unsubscribed"}),
    "complained": (FeedbackKind.COMPLAINED, None, {"event": "complained"}),
}


def body_of(
    data: dict[str, Any], timestamp: int = NOW, signed: dict[str, Any] | None = None
) -> bytes:
    sig = {**signature(str(timestamp)), **(signed or {})}
    return json.dumps({"signature": sig, "event-data": data}).encode()


def provider(now: int = NOW) -> MailgunProvider:
    return MailgunProvider(SIGNING_KEY, clock=clock_at(now))


def test_a_body_signed_with_the_signing_key_verifies() -> None:
    provider().verify(body_of(SAMPLES["delivered"]), {})


def test_a_subaccount_event_verifies_by_its_parent_signature() -> None:
    parent_key = "key-parent-0000000000000000000000"
    parent = signature(str(NOW), key=parent_key)["signature"]
    body = body_of(SAMPLES["delivered"], signed={"signature": "0" * 64, "parent-signature": parent})
    MailgunProvider(parent_key, clock=clock_at(NOW)).verify(body, {})
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body, {})


def test_an_integer_timestamp_is_accepted() -> None:
    body = json.dumps(
        {"signature": {**signature(str(NOW)), "timestamp": NOW}, "event-data": SAMPLES["delivered"]}
    ).encode()
    provider().verify(body, {})


def test_a_signature_made_with_another_key_is_refused() -> None:
    forged = signature(str(NOW), key="key-guess")["signature"]
    with pytest.raises(WebhookUnauthorized, match=r"signature\.signature does not match"):
        provider().verify(body_of(SAMPLES["delivered"], signed={"signature": forged}), {})


def test_a_changed_token_is_refused() -> None:
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body_of(SAMPLES["delivered"], signed={"token": "b" * 50}), {})


def test_a_stale_timestamp_is_refused() -> None:
    with pytest.raises(WebhookUnauthorized, match="outside the 0:15:00 tolerance"):
        provider().verify(body_of(SAMPLES["delivered"], timestamp=NOW - 16 * 60), {})
    provider().verify(body_of(SAMPLES["delivered"], timestamp=NOW - 14 * 60), {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"event-data": {}}).encode(),
        json.dumps({"signature": {"timestamp": str(NOW)}, "event-data": {}}).encode(),
        json.dumps({"signature": {"token": TOKEN, "timestamp": str(NOW)}}).encode(),
        json.dumps({"signature": {"token": TOKEN, "timestamp": True, "signature": "x"}}).encode(),
    ],
    ids=["not-json", "no-signature", "no-token", "no-signature-value", "bool-timestamp"],
)
def test_a_missing_signature_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body, {})


def test_an_empty_signing_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="signing key is empty"):
        MailgunProvider("")


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_each_event_maps_as_documented(sample: str) -> None:
    body = body_of(SAMPLES[sample])
    provider().verify(body, {})
    events = provider().parse(body, {})
    [event] = events
    kind, permanent, evidence = EXPECTED[sample]
    assert (event.kind, event.permanent, event.evidence) == (kind, permanent, evidence)
    assert event.provider == "mailgun"
    assert event.provider_event_id == SAMPLES[sample]["id"]
    assert event.delivery_id == DELIVERY_ID
    assert event.provider_message_id == MAILGUN_MESSAGE_ID
    assert event.occurred_at == datetime(2018, 6, 14, 20, 7, 34, 329574, tzinfo=UTC)
    assert_no_personal_data(events)


@pytest.mark.parametrize("name", ["accepted", "rejected", "stored", "list_member_uploaded"])
def test_events_that_are_not_outcomes_are_left_out(name: str) -> None:
    assert provider().parse(body_of(event_data(name, "x")), {}) == []


def test_a_redelivered_event_keeps_its_event_id() -> None:
    first = provider().parse(body_of(SAMPLES["complained"], timestamp=NOW), {})
    retry = provider().parse(body_of(SAMPLES["complained"], timestamp=NOW + 300), {})
    assert first == retry


def test_a_message_sent_over_smtp_with_our_message_id_names_the_delivery() -> None:
    data = event_data("delivered", "x", **{"user-variables": {}})
    data["message"]["headers"]["message-id"] = f"<{DELIVERY_ID}@mail.example.org>"
    [event] = provider().parse(body_of(data), {})
    assert event.delivery_id == DELIVERY_ID
    assert event.provider_message_id == f"{DELIVERY_ID}@mail.example.org"


def test_without_our_id_the_message_id_is_the_reference() -> None:
    data = event_data("delivered", "x", **{"user-variables": {}})
    [event] = provider().parse(body_of(data), {})
    assert event.delivery_id is None
    assert event.provider_message_id == MAILGUN_MESSAGE_ID


def test_an_event_naming_no_message_is_left_out() -> None:
    data = event_data("unsubscribed", "x", **{"user-variables": {}})
    del data["message"]
    assert provider().parse(body_of(data), {}) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "the body is not a JSON object"),
        (json.dumps({"signature": {}}).encode(), "event-data is not a JSON object"),
        (body_of({"id": "x"}), "event-data.event is missing"),
        (body_of({**SAMPLES["failed-permanent"], "severity": "fatal"}), "event-data.severity"),
        (
            body_of({**SAMPLES["delivered"], "user-variables": {"chimeway_delivery_id": "7"}}),
            "user-variables.chimeway_delivery_id is not a UUID",
        ),
        (body_of({**SAMPLES["delivered"], "user-variables": "x"}), "user-variables is not a JSON"),
        (body_of({**SAMPLES["delivered"], "timestamp": "soon"}), "event-data.timestamp"),
    ],
)
def test_a_body_not_in_mailgun_format_is_unparseable(body: bytes, message: str) -> None:
    with pytest.raises(WebhookUnparseable, match=message):
        provider().parse(body, {})
