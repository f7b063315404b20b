"""Postmark: HTTP Basic credentials, and each record type as Postmark documents it."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chimeway.feedback import (
    FeedbackKind,
    PostmarkProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from chimeway.feedback.postmark import BOUNCE_TYPES
from tests.feedback.support import assert_no_personal_data

DELIVERY_ID = uuid.UUID("6a1f0c7e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
METADATA = {"chimeway_delivery_id": str(DELIVERY_ID), "tenant": "acme"}
GEO = {"IP": "188.2.95.4", "City": "Novi Sad", "Country": "Serbia"}
CLIENT = {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"}
USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.36"

DELIVERY = {
    "RecordType": "Delivery",
    "ServerID": 23,
    "MessageStream": "outbound",
    "MessageID": MESSAGE_ID,
    "Recipient": "john@example.com",
    "Tag": "welcome-email",
    "DeliveredAt": "2021-02-21T16:34:52Z",
    "Details": "smtp;250 2.0.0 OK <john@example.com>",
    "Metadata": METADATA,
}
BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Test",
    "MessageID": MESSAGE_ID,
    "Metadata": METADATA,
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user).",
    "Details": "smtp;550 5.1.1 The email account john@example.com does not exist",
    "Email": "john@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Your password reset",
    "Content": "Return-Path: <>\nTo: john@example.com\nSubject: Your password reset",
}
SPAM_COMPLAINT = {
    **BOUNCE,
    "RecordType": "SpamComplaint",
    "ID": 42,
    "Type": "SpamComplaint",
    "TypeCode": 100001,
    "Name": "Spam complaint",
}
OPEN = {
    "RecordType": "Open",
    "MessageStream": "outbound",
    "Metadata": METADATA,
    "FirstOpen": True,
    "Recipient": "john@example.com",
    "MessageID": MESSAGE_ID,
    "ReceivedAt": "2019-11-05T16:33:54.9070259Z",
    "Platform": "WebMail",
    "ReadSeconds": 5,
    "Tag": "welcome-email",
    "UserAgent": USER_AGENT,
    "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
    "Client": CLIENT,
    "Geo": GEO,
}
CLICK = {
    "RecordType": "Click",
    "MessageStream": "outbound",
    "Metadata": METADATA,
    "Recipient": "john@example.com",
    "MessageID": MESSAGE_ID,
    "ReceivedAt": "2017-10-25T15:21:11.0000000Z",
    "Platform": "Desktop",
    "ClickLocation": "HTML",
    "OriginalLink": "https://example.com/reset?token=abc123",
    "Tag": "welcome-email",
    "UserAgent": USER_AGENT,
    "OS": {"Name": "Linux", "Company": "-", "Family": "Linux"},
    "Client": CLIENT,
    "Geo": GEO,
}
SUBSCRIPTION_CHANGE = {
    "RecordType": "SubscriptionChange",
    "MessageID": MESSAGE_ID,
    "ServerID": 23,
    "MessageStream": "outbound",
    "ChangedAt": "2020-02-01T10:53:34.416071Z",
    "Recipient": "john@example.com",
    "Origin": "Recipient",
    "SuppressSending": True,
    "SuppressionReason": "ManualSuppression",
    "Tag": "my-tag",
    "Metadata": METADATA,
}


def body_of(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


PROVIDER = PostmarkProvider("postmark-hooks", "s3cret:with:colons")
AUTH = basic("postmark-hooks", "s3cret:with:colons")


def parse(record: dict[str, Any]) -> list[Any]:
    return PROVIDER.parse(body_of(record), AUTH)


def test_the_configured_credentials_verify_in_any_header_case() -> None:
    PROVIDER.verify(body_of(DELIVERY), AUTH)
    PROVIDER.verify(body_of(DELIVERY), {"authorization": AUTH["Authorization"]})
    lower_scheme = AUTH["Authorization"].replace("Basic", "basic")
    PROVIDER.verify(body_of(DELIVERY), {"AUTHORIZATION": lower_scheme})


@pytest.mark.parametrize(
    "headers",
    [
        basic("postmark-hooks", "guess"),
        basic("someone", "s3cret:with:colons"),
        basic("postmark-hooks", ""),
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Bearer s3cret"},
        {"Authorization": "Basic not*base64"},
    ],
    ids=["password", "username", "empty-password", "no-colon", "bearer", "bad-base64"],
)
def test_other_credentials_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookUnauthorized) as raised:
        PROVIDER.verify(body_of(DELIVERY), headers)
    assert "s3cret" not in str(raised.value)


def test_a_request_without_credentials_is_refused() -> None:
    with pytest.raises(WebhookUnauthorized, match="the Authorization header is missing"):
        PROVIDER.verify(body_of(DELIVERY), {"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("record", "kind", "permanent", "event_id", "occurred_at", "evidence"),
    [
        (
            DELIVERY,
            FeedbackKind.DELIVERED,
            None,
            f"Delivery:{MESSAGE_ID}:2021-02-21T16:34:52Z",
            datetime(2021, 2, 21, 16, 34, 52, tzinfo=UTC),
            {"record_type": "Delivery"},
        ),
        (
            BOUNCE,
            FeedbackKind.BOUNCED,
            True,
            "Bounce:4323372036854775807",
            datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
            {"record_type": "Bounce", "bounce_type": "HardBounce", "type_code": 1},
        ),
        (
            SPAM_COMPLAINT,
            FeedbackKind.COMPLAINED,
            None,
            "SpamComplaint:42",
            datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
            {"record_type": "SpamComplaint", "bounce_type": "SpamComplaint", "type_code": 100001},
        ),
        (
            OPEN,
            FeedbackKind.OPENED,
            None,
            f"Open:{MESSAGE_ID}:2019-11-05T16:33:54.9070259Z",
            datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
            {"record_type": "Open", "first_open": True},
        ),
        (
            CLICK,
            FeedbackKind.CLICKED,
            None,
            f"Click:{MESSAGE_ID}:2017-10-25T15:21:11.0000000Z",
            datetime(2017, 10, 25, 15, 21, 11, tzinfo=UTC),
            {"record_type": "Click", "click_location": "HTML"},
        ),
        (
            SUBSCRIPTION_CHANGE,
            FeedbackKind.UNSUBSCRIBED,
            None,
            f"SubscriptionChange:{MESSAGE_ID}:2020-02-01T10:53:34.416071Z",
            datetime(2020, 2, 1, 10, 53, 34, 416071, tzinfo=UTC),
            {
                "record_type": "SubscriptionChange",
                "suppression_reason": "ManualSuppression",
                "origin": "Recipient",
            },
        ),
    ],
)
def test_each_record_type_maps_as_documented(
    record: dict[str, Any],
    kind: FeedbackKind,
    permanent: bool | None,
    event_id: str,
    occurred_at: datetime,
    evidence: dict[str, Any],
) -> None:
    PROVIDER.verify(body_of(record), AUTH)
    events = parse(record)
    [event] = events
    assert event.provider == "postmark"
    assert event.kind is kind
    assert event.permanent is permanent
    assert event.provider_event_id == event_id
    assert event.delivery_id == DELIVERY_ID
    assert event.provider_message_id == MESSAGE_ID
    assert event.occurred_at == occurred_at
    assert event.evidence == evidence
    assert_no_personal_data(events)


@pytest.mark.parametrize(("bounce_type", "expected"), sorted(BOUNCE_TYPES.items()))
def test_each_bounce_type_maps_as_documented(
    bounce_type: str, expected: tuple[FeedbackKind, bool | None]
) -> None:
    [event] = parse({**BOUNCE, "Type": bounce_type})
    assert (event.kind, event.permanent) == expected
    assert event.evidence["bounce_type"] == bounce_type


def test_the_bounce_table_covers_the_brief() -> None:
    assert BOUNCE_TYPES["HardBounce"] == (FeedbackKind.BOUNCED, True)
    assert BOUNCE_TYPES["SoftBounce"] == (FeedbackKind.FAILED, False)
    assert BOUNCE_TYPES["Transient"] == (FeedbackKind.FAILED, False)


@pytest.mark.parametrize(
    "bounce_type",
    [
        "AutoResponder",
        "Subscribe",
        "AddressChange",
        "OpenRelayTest",
        "ChallengeVerification",
        "InboundError",
        "SomethingNew",
    ],
)
def test_bounce_types_that_say_nothing_about_the_message_are_left_out(bounce_type: str) -> None:
    assert parse({**BOUNCE, "Type": bounce_type}) == []


def test_a_reactivation_is_not_feedback() -> None:
    assert parse({**SUBSCRIPTION_CHANGE, "SuppressSending": False}) == []


def test_a_manual_suppression_naming_no_message_is_left_out() -> None:
    record = {**SUBSCRIPTION_CHANGE, "MessageID": None, "Origin": "Customer"}
    del record["Metadata"]
    assert parse(record) == []


def test_without_metadata_the_message_id_is_the_reference() -> None:
    record = {key: value for key, value in DELIVERY.items() if key != "Metadata"}
    [event] = parse(record)
    assert event.delivery_id is None
    assert event.provider_message_id == MESSAGE_ID


def test_an_inbound_record_is_not_feedback() -> None:
    assert parse({"RecordType": "Inbound", "MessageID": MESSAGE_ID}) == []


@pytest.mark.parametrize("record", [BOUNCE, OPEN], ids=["with-ID", "without-ID"])
def test_a_retried_record_keeps_its_event_id(record: dict[str, Any]) -> None:
    body = body_of(record)
    first, retry = PROVIDER.parse(body, AUTH), PROVIDER.parse(body, AUTH)
    assert first[0].provider_event_id == retry[0].provider_event_id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<xml/>", "not UTF-8 JSON"),
        (b"[]", "the body is not a JSON object"),
        (b'{"MessageID": "x"}', "RecordType is missing"),
        (body_of({**BOUNCE, "Type": None}), "Type is missing"),
        (body_of({**DELIVERY, "Metadata": ["x"]}), "Metadata is not a JSON object"),
        (
            body_of({**DELIVERY, "Metadata": {"chimeway_delivery_id": "nope"}}),
            "Metadata.chimeway_delivery_id is not a UUID",
        ),
        (body_of({**DELIVERY, "MessageID": 12}), "MessageID is not a string"),
        (body_of({**DELIVERY, "DeliveredAt": "Feb 21"}), "DeliveredAt is not an ISO 8601 time"),
    ],
)
def test_a_body_not_in_postmark_format_is_unparseable(body: bytes, message: str) -> None:
    with pytest.raises(WebhookUnparseable, match=message):
        PROVIDER.parse(body, AUTH)
