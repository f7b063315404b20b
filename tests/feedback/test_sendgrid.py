"""SendGrid's Signed Event Webhook: ECDSA P-256 over timestamp + body, and every event type."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chimeway.errors import ConfigurationError
from chimeway.feedback import (
    FeedbackKind,
    SendGridProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from tests.feedback.support import assert_no_personal_data, clock_at

NOW = 1_513_299_600
DELIVERY_ID = uuid.UUID("2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f")
X_MESSAGE_ID = "14c5d75ce93.dfd.64b469"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()

BASE = {
    "email": "john@example.com",
    "timestamp": 1513299569,
    "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "category": "cat facts",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    "chimeway_delivery_id": str(DELIVERY_ID),
}


def event(name: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {**BASE, "event": name, "sg_event_id": event_id, **fields}


EVENTS = [
    event("processed", "rbtnWrG1DVDGGGFHFyun0A=="),
    event("deferred", "t7LEShmowp86DTdUW8M-GQ==", response="400 try again later", attempt="5"),
    event("delivered", "rWVYmVk90MjZJ9iohOBa3w==", response="250 OK", ip="188.2.95.4"),
    event(
        "open",
        "FOTFFO0ecsBE-zxFXfs6WA==",
        useragent="Mozilla/5.0 (Windows NT 5.1)",
        ip="188.2.95.4",
        sg_machine_open=False,
    ),
    event(
        "click",
        "kCAi1KttyQdEKHhdC-nuEA==",
        useragent="Mozilla/5.0 (Windows NT 5.1)",
        ip="188.2.95.4",
        url="https://example.com/reset?token=abc123",
    ),
    event(
        "bounce",
        "6g4ZI7SA-xmRDv57GoPIPw==",
        type="bounce",
        status="5.0.0",
        reason="500 unknown recipient john@example.com",
        bounce_classification="Invalid Address",
    ),
    event(
        "bounce",
        "X8Vd3bu2RyOvSSbBKKU8mw==",
        type="blocked",
        status="4.0.0",
        reason="550 blocked by john@example.com",
        bounce_classification="Reputation",
    ),
    event("dropped", "zmzJhfJgAfUSOW80yEbPyw==", reason="Bounced Address", status="5.0.0"),
    event("spamreport", "37nvH5QBz858KGVYCM4uOA=="),
    event("unsubscribe", "Krfn-yDfy7ec3DKNtu3Udg=="),
    event(
        "group_unsubscribe",
        "ahSCB7xYcXFb-hEaawsPRw==",
        asm_group_id=10,
        ip="188.2.95.4",
        useragent="Mozilla/5.0 (Windows NT 5.1)",
    ),
    event("group_resubscribe", "w_u0vJhLT-OFfprar5N93g==", asm_group_id=10),
]
EXPECTED = {
    "rWVYmVk90MjZJ9iohOBa3w==": (FeedbackKind.DELIVERED, None, {"event": "delivered"}),
    "FOTFFO0ecsBE-zxFXfs6WA==": (
        FeedbackKind.OPENED,
        None,
        {"event": "open", "machine_open": False},
    ),
    "kCAi1KttyQdEKHhdC-nuEA==": (FeedbackKind.CLICKED, None, {"event": "click"}),
    "6g4ZI7SA-xmRDv57GoPIPw==": (
        FeedbackKind.BOUNCED,
        True,
        {
            "event": "bounce",
            "type": "bounce",
            "status": "5.0.0",
            "bounce_classification": "Invalid Address",
        },
    ),
    "X8Vd3bu2RyOvSSbBKKU8mw==": (
        FeedbackKind.FAILED,
        False,
        {
            "event": "bounce",
            "type": "blocked",
            "status": "4.0.0",
            "bounce_classification": "Reputation",
        },
    ),
    "zmzJhfJgAfUSOW80yEbPyw==": (
        FeedbackKind.FAILED,
        True,
        {"event": "dropped", "reason": "Bounced Address"},
    ),
    "37nvH5QBz858KGVYCM4uOA==": (FeedbackKind.COMPLAINED, None, {"event": "spamreport"}),
    "Krfn-yDfy7ec3DKNtu3Udg==": (FeedbackKind.UNSUBSCRIBED, None, {"event": "unsubscribe"}),
    "ahSCB7xYcXFb-hEaawsPRw==": (
        FeedbackKind.UNSUBSCRIBED,
        None,
        {"event": "group_unsubscribe", "asm_group_id": 10},
    ),
}


def body_of(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()


def signed(body: bytes, timestamp: int = NOW, key: Any = PRIVATE_KEY) -> dict[str, str]:
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: str(timestamp)}


def provider(now: int = NOW) -> SendGridProvider:
    return SendGridProvider(PUBLIC_KEY, clock=clock_at(now))


def test_a_batch_signed_with_the_key_pair_verifies_in_any_header_case() -> None:
    body = body_of(EVENTS)
    provider().verify(body, signed(body))
    provider().verify(body, {name.lower(): value for name, value in signed(body).items()})


def test_a_pem_public_key_is_accepted_too() -> None:
    pem = PRIVATE_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    body = body_of(EVENTS)
    SendGridProvider(pem.decode(), clock=clock_at(NOW)).verify(body, signed(body))


def test_a_signature_by_another_key_is_refused() -> None:
    body = body_of(EVENTS)
    with pytest.raises(WebhookUnauthorized, match="does not match the body"):
        provider().verify(body, signed(body, key=ec.generate_private_key(ec.SECP256R1())))


def test_a_changed_body_or_timestamp_is_refused() -> None:
    body = body_of(EVENTS)
    headers = signed(body)
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body_of(EVENTS[:1]), headers)
    with pytest.raises(WebhookUnauthorized):
        provider().verify(body, {**headers, TIMESTAMP: str(NOW + 1)})


def test_a_signature_that_is_not_base64_der_is_refused() -> None:
    body = body_of(EVENTS)
    for garbage in ("not base64!", base64.b64encode(b"not DER").decode()):
        with pytest.raises(WebhookUnauthorized):
            provider().verify(body, {**signed(body), SIGNATURE: garbage})


@pytest.mark.parametrize("missing", [SIGNATURE, TIMESTAMP])
def test_a_missing_header_is_refused(missing: str) -> None:
    body = body_of(EVENTS)
    headers = signed(body)
    del headers[missing]
    with pytest.raises(WebhookUnauthorized, match="header is missing"):
        provider().verify(body, headers)


def test_a_stale_timestamp_is_refused_unless_the_check_is_off() -> None:
    body = body_of(EVENTS)
    headers = signed(body, timestamp=NOW - 600)
    with pytest.raises(WebhookUnauthorized, match="outside the 0:05:00 tolerance"):
        provider().verify(body, headers)
    SendGridProvider(PUBLIC_KEY, tolerance=None, clock=clock_at(NOW)).verify(body, headers)


@pytest.mark.parametrize(
    "public_key",
    [
        "not base64!",
        base64.b64encode(b"not a key").decode(),
        base64.b64encode(
            ec.generate_private_key(ec.SECP384R1())
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
        base64.b64encode(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
    ],
    ids=["not-base64", "not-der", "p384", "rsa"],
)
def test_a_key_that_is_not_p256_is_a_configuration_error(public_key: str) -> None:
    with pytest.raises(ConfigurationError, match="SendGrid verification key"):
        SendGridProvider(public_key)


def test_every_event_type_maps_as_documented() -> None:
    body = body_of(EVENTS)
    events = provider().parse(body, signed(body))
    assert {e.provider_event_id for e in events} == set(EXPECTED)
    for parsed in events:
        kind, permanent, evidence = EXPECTED[parsed.provider_event_id or ""]
        assert (parsed.kind, parsed.permanent, parsed.evidence) == (kind, permanent, evidence)
        assert parsed.provider == "sendgrid"
        assert parsed.delivery_id == DELIVERY_ID
        assert parsed.provider_message_id == X_MESSAGE_ID
        assert parsed.occurred_at == datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)
    assert_no_personal_data(events)


def test_processed_deferred_and_resubscribe_are_left_out() -> None:
    skipped = [e for e in EVENTS if e["event"] in ("processed", "deferred", "group_resubscribe")]
    assert len(skipped) == 3
    assert provider().parse(body_of(skipped), {}) == []


def test_events_keep_the_batch_order() -> None:
    events = provider().parse(body_of(EVENTS), {})
    expected = [e["sg_event_id"] for e in EVENTS if e["sg_event_id"] in EXPECTED]
    assert [e.provider_event_id for e in events] == expected


def test_a_redelivered_event_keeps_its_event_id() -> None:
    first = provider().parse(body_of(EVENTS[2:3]), {})
    again = provider().parse(body_of([EVENTS[5], EVENTS[2]]), {})
    assert first[0] == again[1]


def test_without_the_custom_arg_the_message_id_is_the_reference() -> None:
    item = {k: v for k, v in EVENTS[2].items() if k != "chimeway_delivery_id"}
    [parsed] = provider().parse(body_of([item]), {})
    assert parsed.delivery_id is None
    assert parsed.provider_message_id == X_MESSAGE_ID


def test_a_bounce_without_a_type_is_a_bounce() -> None:
    item = {k: v for k, v in EVENTS[5].items() if k != "type"}
    [parsed] = provider().parse(body_of([item]), {})
    assert (parsed.kind, parsed.permanent) == (FeedbackKind.BOUNCED, True)


def test_an_event_naming_no_message_is_left_out() -> None:
    item = {
        k: v for k, v in EVENTS[2].items() if k not in ("chimeway_delivery_id", "sg_message_id")
    }
    assert provider().parse(body_of([item]), {}) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "not a JSON array of events"),
        (b"garbage", "not UTF-8 JSON"),
        (b'["delivered"]', r"event \[0\] is not a JSON object"),
        (body_of([{"sg_event_id": "x"}]), r"event \[0\].event is missing"),
        (body_of([EVENTS[2], {**EVENTS[5], "type": "soft"}]), r"event \[1\].type is neither"),
        (
            body_of([{**EVENTS[2], "chimeway_delivery_id": "123"}]),
            "chimeway_delivery_id is not a UUID",
        ),
        (
            body_of([{**EVENTS[2], "timestamp": "yesterday"}]),
            r"event \[0\].timestamp is not a Unix",
        ),
        (body_of([{**EVENTS[2], "sg_message_id": 7}]), "sg_message_id is not a string"),
    ],
)
def test_a_body_not_in_sendgrid_format_is_unparseable(body: bytes, message: str) -> None:
    with pytest.raises(WebhookUnparseable, match=message):
        provider().parse(body, {})


@pytest.mark.parametrize(
    ("sg_message_id", "expected"),
    [
        ("XBg2anf2TqCy6WXKQFhieQ.filter0905p1mdw1-4434-59E0C6FF-3.0", "XBg2anf2TqCy6WXKQFhieQ"),
        ("LRzXl_NHStOGhQ4kofSm_A.recvd-5f4ccf4dd4-9dnrl-1-5F57A8C6-6.0", "LRzXl_NHStOGhQ4kofSm_A"),
        ("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "14c5d75ce93.dfd.64b469"),
        ("no-suffix", "no-suffix"),
    ],
)
def test_the_provider_message_id_is_the_x_message_id(sg_message_id: str, expected: str) -> None:
    [parsed] = provider().parse(body_of([{**EVENTS[2], "sg_message_id": sg_message_id}]), {})
    assert parsed.provider_message_id == expected
