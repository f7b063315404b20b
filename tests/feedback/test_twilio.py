"""Twilio status callbacks: X-Twilio-Signature over URL + sorted params, and each status."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

import pytest

from chimeway.errors import ConfigurationError
from chimeway.feedback import (
    FeedbackKind,
    TwilioProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
)
from chimeway.feedback.twilio import ERROR_CODES, url_variants
from tests.feedback.support import assert_no_personal_data

AUTH_TOKEN = "12345abcdef67890fedcba0987654321"
URL = "https://notify.example.org/v1/webhooks/twilio?tenant=acme"
SID = "SM1f0e8ae6ade43cb3c0ce4525424e404f"


def callback(status: str, error_code: str | None = None) -> dict[str, str]:
    params = {
        "ApiVersion": "2010-04-01",
        "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "MessagingServiceSid": "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "SmsSid": SID,
        "SmsStatus": status,
        "MessageSid": SID,
        "MessageStatus": status,
        "To": "+15558675310",
        "From": "+15017122661",
    }
    if error_code is not None:
        params["ErrorCode"] = error_code
    return params


def body_of(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, str]:
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
    return {"X-Twilio-Signature": base64.b64encode(digest).decode()}


PROVIDER = TwilioProvider(AUTH_TOKEN)


def test_the_documented_example_verifies() -> None:
    """The worked example of Twilio's webhook security page (Auth Token 12345)."""
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    headers = {"X-Twilio-Signature": "GvWf1cFY/Q7PnoempGyD5oXAezc="}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    TwilioProvider("12345").verify(body_of(params), headers, url)


def test_a_signed_callback_verifies_in_any_header_case() -> None:
    params = callback("delivered")
    PROVIDER.verify(body_of(params), sign(URL, params), URL)
    lower = {"x-twilio-signature": sign(URL, params)["X-Twilio-Signature"]}
    PROVIDER.verify(body_of(params), lower, URL)


def test_the_order_of_the_form_fields_does_not_matter() -> None:
    params = callback("delivered")
    shuffled = dict(reversed(list(params.items())))
    PROVIDER.verify(body_of(shuffled), sign(URL, params), URL)


def test_a_blank_parameter_is_part_of_the_signature() -> None:
    params = {**callback("undelivered"), "ErrorCode": ""}
    PROVIDER.verify(body_of(params), sign(URL, params), URL)


def test_the_public_url_configured_once_replaces_the_request_url() -> None:
    params = callback("delivered")
    behind_proxy = TwilioProvider(AUTH_TOKEN, public_url=URL)
    behind_proxy.verify(
        body_of(params), sign(URL, params), "http://10.0.0.7:8000/v1/webhooks/twilio"
    )


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        ("https://notify.example.org:443/hook", "https://notify.example.org/hook"),
        ("https://notify.example.org/hook", "https://notify.example.org:443/hook"),
        ("http://notify.example.org:80/hook?x=1", "http://notify.example.org/hook?x=1"),
    ],
)
def test_the_default_port_may_be_written_or_not(signed_url: str, request_url: str) -> None:
    params = callback("delivered")
    PROVIDER.verify(body_of(params), sign(signed_url, params), request_url)


def test_url_variants() -> None:
    assert url_variants("https://h/p") == ["https://h/p", "https://h:443/p"]
    assert url_variants("https://h:443/p") == ["https://h:443/p", "https://h/p"]
    assert url_variants("https://[::1]:443/p") == ["https://[::1]:443/p", "https://[::1]/p"]
    assert url_variants("https://h:8443/p") == ["https://h:8443/p"]
    assert url_variants("https://h:bad/p") == ["https://h:bad/p"]


def test_another_url_is_refused() -> None:
    params = callback("delivered")
    headers = sign(URL, params)
    for other in (URL.replace("https", "http"), URL + "&x=1", URL.replace("acme", "evil")):
        with pytest.raises(WebhookUnauthorized, match="does not match the URL and body"):
            PROVIDER.verify(body_of(params), headers, other)


def test_a_changed_body_or_another_token_is_refused() -> None:
    params = callback("delivered")
    with pytest.raises(WebhookUnauthorized):
        PROVIDER.verify(body_of(callback("failed", "30003")), sign(URL, params), URL)
    with pytest.raises(WebhookUnauthorized):
        PROVIDER.verify(body_of(params), sign(URL, params, token="guess"), URL)


def test_a_missing_signature_or_url_is_refused() -> None:
    params = callback("delivered")
    with pytest.raises(WebhookUnauthorized, match="X-Twilio-Signature header is missing"):
        PROVIDER.verify(body_of(params), {}, URL)
    with pytest.raises(WebhookUnauthorized, match="pass url= or configure public_url="):
        PROVIDER.verify(body_of(params), sign(URL, params))


def test_a_body_that_is_not_form_data_is_refused() -> None:
    with pytest.raises(WebhookUnauthorized, match="not form data"):
        PROVIDER.verify(b'{"MessageSid": "SM1"}', {"X-Twilio-Signature": "x"}, URL)


def test_an_empty_auth_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="auth token is empty"):
        TwilioProvider("")


@pytest.mark.parametrize(
    ("status", "error_code", "kind", "permanent"),
    [
        ("delivered", None, FeedbackKind.DELIVERED, None),
        *[
            (status, code, kind, permanent)
            for code, (kind, permanent) in sorted(ERROR_CODES.items())
            for status in ("undelivered", "failed")
        ],
        ("undelivered", "30008", FeedbackKind.FAILED, None),
        ("failed", None, FeedbackKind.FAILED, None),
    ],
)
def test_each_outcome_maps_by_status_and_error_code(
    status: str, error_code: str | None, kind: FeedbackKind, permanent: bool | None
) -> None:
    params = callback(status, error_code)
    body = body_of(params)
    PROVIDER.verify(body, sign(URL, params), URL)
    events = PROVIDER.parse(body, {})
    [event] = events
    assert (event.kind, event.permanent) == (kind, permanent)
    assert event.provider == "twilio"
    assert event.provider_event_id == f"{SID}:{status}"
    assert event.delivery_id is None
    assert event.provider_message_id == SID
    assert event.occurred_at is None
    expected = (
        {"status": status} if error_code is None else {"status": status, "error_code": error_code}
    )
    assert event.evidence == expected
    assert_no_personal_data(events)


def test_the_error_table_covers_the_brief() -> None:
    assert ERROR_CODES["30005"] == (FeedbackKind.BOUNCED, True)
    assert ERROR_CODES["30003"] == (FeedbackKind.FAILED, False)
    assert ERROR_CODES["21610"] == (FeedbackKind.UNSUBSCRIBED, None)


@pytest.mark.parametrize("status", ["accepted", "queued", "sending", "sent", "read", "scheduled"])
def test_statuses_that_are_not_outcomes_are_left_out(status: str) -> None:
    assert PROVIDER.parse(body_of(callback(status)), {}) == []


def test_a_repeated_callback_keeps_its_event_id() -> None:
    body = body_of(callback("undelivered", "30003"))
    assert PROVIDER.parse(body, {}) == PROVIDER.parse(body, {})
    delivered = PROVIDER.parse(body_of(callback("delivered")), {})
    assert delivered[0].provider_event_id != PROVIDER.parse(body, {})[0].provider_event_id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"MessageStatus=delivered", "MessageSid and MessageStatus are required"),
        (b"MessageSid=SM1", "MessageSid and MessageStatus are required"),
        (b"\xff\xfe=1", "not form-encoded UTF-8"),
        (b"just text", "not form-encoded UTF-8"),
    ],
)
def test_a_body_not_in_twilio_format_is_unparseable(body: bytes, message: str) -> None:
    with pytest.raises(WebhookUnparseable, match=message):
        PROVIDER.parse(body, {})
