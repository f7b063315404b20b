"""Receipts signed per Standard Webhooks: the signature scheme and Chimeway's receipt format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chimeway.errors import ConfigurationError
from chimeway.feedback import (
    FeedbackKind,
    StandardWebhooksProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from tests.feedback.support import assert_no_personal_data, clock_at

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_746_100_000
DELIVERY_ID = uuid.UUID("0f8e2b1c-3d4a-4b5c-9d6e-7f8091a2b3c4")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def receipt(receipt_type: str = "message.delivered", **data: Any) -> bytes:
    data.setdefault("delivery_id", str(DELIVERY_ID))
    body = {"type": receipt_type, "timestamp": "2025-05-01T12:00:00Z", "data": data}
    return json.dumps(body).encode()


def opened_at(timestamp: str) -> bytes:
    data = {"provider_message_id": "m"}
    return json.dumps({"type": "message.opened", "timestamp": timestamp, "data": data}).encode()


def signed_headers(
    body: bytes,
    *,
    webhook_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    timestamp: int = NOW,
    secret: str = SECRET,
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }


def provider(now: int = NOW) -> StandardWebhooksProvider:
    return StandardWebhooksProvider(SECRET, clock=clock_at(now))


def test_the_specification_test_vector_verifies() -> None:
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    provider(1614265330).verify(b'{"test": 2432232314}', headers)


def test_a_signature_made_with_the_secret_verifies_and_header_case_does_not_matter() -> None:
    body = receipt()
    headers = {name.upper(): value for name, value in signed_headers(body).items()}
    provider().verify(body, headers)


def test_one_matching_entry_among_several_is_enough() -> None:
    body = receipt()
    headers = signed_headers(body)
    other = sign("whsec_" + base64.b64encode(b"another secret").decode(), "x", NOW, body)
    headers["webhook-signature"] = f"v1a,c29tZXRoaW5n {other} {headers['webhook-signature']}"
    provider().verify(body, headers)


def test_a_raw_key_or_an_unprefixed_secret_is_the_same_key() -> None:
    body = receipt()
    raw = base64.b64decode(SECRET.removeprefix("whsec_"))
    StandardWebhooksProvider(raw, clock=clock_at(NOW)).verify(body, signed_headers(body))
    unprefixed = SECRET.removeprefix("whsec_")
    StandardWebhooksProvider(unprefixed, clock=clock_at(NOW)).verify(body, signed_headers(body))


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", b""])
def test_a_secret_that_is_not_base64_is_a_configuration_error(secret: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="Standard Webhooks secret"):
        StandardWebhooksProvider(secret)


def test_a_changed_body_is_refused() -> None:
    body = receipt()
    headers = signed_headers(body)
    with pytest.raises(WebhookUnauthorized, match="no webhook-signature entry matches"):
        provider().verify(receipt("message.bounced"), headers)


def test_a_signature_made_with_another_secret_is_refused() -> None:
    body = receipt()
    forged = signed_headers(body, secret="whsec_" + base64.b64encode(b"guess").decode())
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body, forged)


def test_a_signature_of_another_version_is_not_accepted_as_v1() -> None:
    body = receipt()
    headers = signed_headers(body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body, headers)


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_timestamp_outside_the_tolerance_is_refused(skew: timedelta) -> None:
    body = receipt()
    headers = signed_headers(body, timestamp=NOW + int(skew.total_seconds()))
    with pytest.raises(WebhookUnauthorized, match="webhook-timestamp is outside"):
        provider().verify(body, headers)


def test_the_tolerance_can_be_widened() -> None:
    body = receipt()
    headers = signed_headers(body, timestamp=NOW - 3600)
    wide = StandardWebhooksProvider(SECRET, tolerance=timedelta(hours=2), clock=clock_at(NOW))
    wide.verify(body, headers)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing: str) -> None:
    body = receipt()
    headers = signed_headers(body)
    del headers[missing]
    with pytest.raises(WebhookUnauthorized, match=f"the {missing} header is missing"):
        provider().verify(body, headers)


def test_a_timestamp_that_is_not_an_integer_is_refused() -> None:
    body = receipt()
    headers = signed_headers(body)
    headers["webhook-timestamp"] = "2025-05-01T12:00:00Z"
    with pytest.raises(WebhookUnauthorized, match="not a Unix timestamp"):
        provider().verify(body, headers)


@pytest.mark.parametrize(
    ("receipt_type", "kind", "permanent"),
    [
        ("message.delivered", FeedbackKind.DELIVERED, None),
        ("message.bounced", FeedbackKind.BOUNCED, True),
        ("message.failed", FeedbackKind.FAILED, None),
        ("message.complained", FeedbackKind.COMPLAINED, None),
        ("message.opened", FeedbackKind.OPENED, None),
        ("message.clicked", FeedbackKind.CLICKED, None),
        ("message.unsubscribed", FeedbackKind.UNSUBSCRIBED, None),
    ],
)
def test_each_receipt_type_maps_to_its_kind(
    receipt_type: str, kind: FeedbackKind, permanent: bool | None
) -> None:
    body = receipt(receipt_type, provider_message_id="rcpt-991")
    [event] = provider().parse(body, signed_headers(body))
    assert event.kind is kind
    assert event.permanent is permanent
    assert event.provider == "standard_webhooks"
    assert event.provider_event_id == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert event.delivery_id == DELIVERY_ID
    assert event.provider_message_id == "rcpt-991"
    assert event.occurred_at == datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert event.evidence == {"type": receipt_type}


def test_a_failure_says_whether_it_is_permanent_and_keeps_a_safe_code() -> None:
    body = receipt("message.failed", permanent=False, code="mailbox_full")
    [event] = provider().parse(body, signed_headers(body))
    assert event.permanent is False
    assert event.evidence == {"type": "message.failed", "code": "mailbox_full"}


def test_a_code_that_looks_like_an_address_is_not_kept() -> None:
    body = receipt("message.failed", code="john@example.com")
    events = provider().parse(body, signed_headers(body))
    assert events[0].evidence == {"type": "message.failed"}
    assert_no_personal_data(events)


def test_a_retried_receipt_keeps_its_event_id() -> None:
    body = receipt()
    first = provider().parse(body, signed_headers(body, timestamp=NOW))
    retry = provider().parse(body, signed_headers(body, timestamp=NOW + 60))
    assert first == retry


def test_a_type_this_version_does_not_know_is_accepted_with_no_event() -> None:
    body = receipt("message.read")
    assert provider().parse(body, signed_headers(body)) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[]", "the body is not a JSON object"),
        (b'{"data": {}}', "type is missing"),
        (b'{"type": "message.delivered", "data": []}', "data is not a JSON object"),
        (b'{"type": "message.delivered", "data": {}}', "data.delivery_id or"),
        (b'{"type": "message.delivered", "data": {"delivery_id": "d-1"}}', "not a UUID"),
        (
            b'{"type": "message.failed", "data": {"provider_message_id": "m", "permanent": "yes"}}',
            "data.permanent is not a boolean",
        ),
        (opened_at("yesterday"), "timestamp is not an ISO 8601 time"),
        (opened_at("2025-05-01T12:00:00"), "timestamp has no UTC offset"),
    ],
)
def test_a_body_not_in_the_receipt_format_is_unparseable(body: bytes, message: str) -> None:
    with pytest.raises(WebhookUnparseable, match=message) as raised:
        provider().parse(body, signed_headers(body))
    assert body.decode("utf-8", "replace") not in str(raised.value)


def test_the_repr_does_not_show_the_secret() -> None:
    assert "MfKQ9" not in repr(provider())
