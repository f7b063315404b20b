"""The helpers every provider shares: headers, freshness, ids, times and safe evidence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chimeway.feedback import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.parsing import (
    delivery_id,
    delivery_id_from_message_id,
    evidence,
    iso_time,
    load_json,
    unix_time,
)
from chimeway.feedback.verifying import check_fresh, header, required_header
from tests.feedback.support import clock_at

ID = uuid.UUID("0f8e2b1c-3d4a-4b5c-9d6e-7f8091a2b3c4")


def test_header_names_match_in_any_case() -> None:
    headers = {"Content-Type": "application/json", "WEBHOOK-ID": "msg_1"}
    assert header(headers, "webhook-id") == "msg_1"
    assert header(headers, "content-type") == "application/json"
    assert header(headers, "webhook-signature") is None
    assert required_header(headers, "Webhook-Id") == "msg_1"


def test_an_empty_required_header_is_missing() -> None:
    with pytest.raises(WebhookUnauthorized, match="the webhook-id header is missing"):
        required_header({"webhook-id": ""}, "webhook-id")


def test_freshness_is_checked_both_ways_and_can_be_skipped() -> None:
    clock = clock_at(1_000_000)
    tolerance = timedelta(minutes=5)
    check_fresh("1000300", field="t", clock=clock, tolerance=tolerance)
    check_fresh("999700", field="t", clock=clock, tolerance=tolerance)
    for stale in ("1000301", "999699"):
        with pytest.raises(WebhookUnauthorized, match="t is outside the 0:05:00 tolerance"):
            check_fresh(stale, field="t", clock=clock, tolerance=tolerance)
    check_fresh("1", field="t", clock=clock, tolerance=None)
    with pytest.raises(WebhookUnauthorized, match="t is not a Unix timestamp"):
        check_fresh("1.5", field="t", clock=clock, tolerance=None)


def test_our_delivery_id_is_read_from_our_message_id_only() -> None:
    assert delivery_id_from_message_id(f"<{ID}@mail.example.org>") == ID
    assert delivery_id_from_message_id(f"{ID}@mail.example.org") == ID
    assert delivery_id_from_message_id("<20130503182626.18666.16540@mailgun.org>") is None
    assert delivery_id_from_message_id(str(ID)) is None  # no domain: not a Message-ID
    assert delivery_id_from_message_id(None) is None


def test_a_delivery_id_must_be_a_uuid() -> None:
    assert delivery_id(str(ID), "x") == ID
    assert delivery_id(None, "x") is None
    assert delivery_id("", "x") is None
    with pytest.raises(WebhookUnparseable, match="x is not a UUID"):
        delivery_id("0f8e2b1c", "x")
    with pytest.raises(WebhookUnparseable, match="x is not a string"):
        delivery_id(7, "x")


def test_times_are_aware_and_in_utc() -> None:
    expected = datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)
    assert iso_time("2014-08-01T13:28:10.2735393-04:00", "t") == expected
    assert unix_time(1406914090.273539, "t") == expected
    assert unix_time("1406914090", "t") == expected.replace(microsecond=0)
    assert unix_time(None, "t") is None
    with pytest.raises(WebhookUnparseable, match="t is not a Unix time"):
        unix_time(True, "t")
    with pytest.raises(WebhookUnparseable, match="t is not a Unix time"):
        unix_time(1e20, "t")


def test_evidence_keeps_codes_and_drops_what_could_be_personal() -> None:
    kept = evidence(
        status="5.1.1",
        code=550,
        flag=False,
        classification="Invalid Address",
        address="john@example.com",
        url="https://example.com/x",
        phone="+15558675310",
        prose="x" * 65,
        missing=None,
        nested={"a": 1},
    )
    assert kept == {
        "status": "5.1.1",
        "code": 550,
        "flag": False,
        "classification": "Invalid Address",
    }


def test_a_json_error_does_not_echo_the_body() -> None:
    with pytest.raises(WebhookUnparseable) as raised:
        load_json(b'{"email": "john@example.com"')
    assert "john@example.com" not in str(raised.value)
