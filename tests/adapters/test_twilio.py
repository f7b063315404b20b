"""TwilioSmsAdapter against a real local HTTP server standing in for Twilio's API."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from chimeway.adapters import (
    Bounced,
    Permanent,
    ProviderAdapter,
    RecipientProfile,
    Sent,
    Temporary,
    TwilioSmsAdapter,
)
from chimeway.errors import ConfigurationError
from tests.adapters.conftest import PHONE, HttpFactory, HttpServer, Reply, make_request

SID = "AC" + "0" * 32
TOKEN = "auth-token-secret"
SMS = {"text_body": "Your code is 123456"}
CREATED = {"sid": "SM" + "1" * 32, "status": "queued", "to": PHONE}
MESSAGES_PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"

OPENED: list[TwilioSmsAdapter] = []


@pytest.fixture(autouse=True)
def close_adapters(start_http: HttpFactory) -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def twilio(server: HttpServer, **kwargs: object) -> TwilioSmsAdapter:
    settings: dict[str, object] = {"from_number": "+15005550001", "timeout": 5, **kwargs}
    adapter = TwilioSmsAdapter(
        account_sid=SID,
        auth_token=TOKEN,
        base_url=server.url,
        **settings,  # type: ignore[arg-type]
    )
    OPENED.append(adapter)
    return adapter


def error(code: int, status: int = 400) -> Reply:
    return Reply(
        status,
        {
            "code": code,
            "message": f"The 'To' number {PHONE} is not a valid phone number.",
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def test_posts_the_message_form_with_basic_auth_and_the_idempotency_token(
    start_http: HttpFactory,
) -> None:
    server = start_http(Reply(201, CREATED))
    adapter = twilio(server, status_callback="https://acme.test/twilio/status")
    request = make_request("sms", SMS)

    sent = adapter.deliver(request)

    assert sent == Sent(
        provider_message_id=CREATED["sid"], meta={"provider": "twilio", "status": "queued"}
    )
    [received] = server.requests
    assert received.path == MESSAGES_PATH
    assert received.headers["content-type"] == "application/x-www-form-urlencoded"
    assert (
        received.headers["authorization"]
        == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    )
    assert received.headers["i-twilio-idempotency-token"] == request.idempotency_key
    assert parse_qs(received.body.decode()) == {
        "To": [PHONE],
        "From": ["+15005550001"],
        "Body": [SMS["text_body"]],
        "StatusCallback": ["https://acme.test/twilio/status"],
    }


def test_a_messaging_service_can_send_instead_of_a_number(start_http: HttpFactory) -> None:
    server = start_http(Reply(201, CREATED))
    adapter = twilio(server, from_number=None, messaging_service_sid="MG" + "2" * 32)

    adapter.deliver(make_request("sms", SMS))

    form = parse_qs(server.requests[0].body.decode())
    assert form["MessagingServiceSid"] == ["MG" + "2" * 32]
    assert "From" not in form
    assert "StatusCallback" not in form


@pytest.mark.parametrize(
    ("reply", "failure", "code"),
    [
        (error(21211), Bounced, 21211),
        (error(21614), Bounced, 21614),
        (error(21612), Bounced, 21612),
        (error(21610), Permanent, 21610),
        (error(21608), Permanent, 21608),
        (error(20003, 401), Permanent, 20003),
        (error(20429, 429), Temporary, 20429),
        (error(20500, 500), Temporary, 20500),
        (Reply(503, "<html>maintenance</html>"), Temporary, None),
        (Reply(404, "<html>not found</html>"), Permanent, None),
    ],
)
def test_twilio_answers(
    start_http: HttpFactory, reply: Reply, failure: type[Exception], code: int | None
) -> None:
    server = start_http(reply)

    with pytest.raises(failure) as raised:
        twilio(server).deliver(make_request("sms", SMS))

    assert type(raised.value) is failure
    meta = raised.value.meta  # type: ignore[attr-defined]
    assert meta["provider"] == "twilio"
    assert meta["status_code"] == reply.status
    assert meta.get("twilio_error_code") == code
    if code is not None:
        assert meta["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert PHONE not in str(raised.value)
    assert PHONE not in str(meta)


def test_retry_after_is_kept(start_http: HttpFactory) -> None:
    server = start_http(Reply(429, {"code": 20429, "status": 429}, {"Retry-After": "9"}))

    with pytest.raises(Temporary) as raised:
        twilio(server).deliver(make_request("sms", SMS))

    assert raised.value.retry_after == 9.0


def test_twilio_slower_than_the_timeout_is_temporary(http_server: HttpServer) -> None:
    release = threading.Event()
    http_server.then(Reply(201, CREATED, hold=release))

    with pytest.raises(Temporary) as raised:
        twilio(http_server, timeout=0.5).deliver(make_request("sms", SMS))

    release.set()
    assert raised.value.meta == {"provider": "twilio", "timeout": True}


def test_a_recipient_without_a_phone_is_permanent(http_server: HttpServer) -> None:
    request = make_request("sms", SMS, recipient=RecipientProfile(id="ada", email="a@b.test"))

    with pytest.raises(Permanent, match="no phone number"):
        twilio(http_server).deliver(request)

    assert http_server.requests == []


def test_content_that_is_not_sms_content_is_permanent(http_server: HttpServer) -> None:
    with pytest.raises(Permanent, match="sms content is invalid: text_body: Field required"):
        twilio(http_server).deliver(make_request("sms", {"text": "hi"}))


def test_is_a_provider_adapter_with_its_settings() -> None:
    adapter = TwilioSmsAdapter(account_sid=SID, auth_token=TOKEN, from_number="+15005550001")
    OPENED.append(adapter)

    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.name, adapter.timeout, adapter.capacity) == ("twilio", 15.0, 10)
    assert adapter.messages_url == f"https://api.twilio.com{MESSAGES_PATH}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"from_number": None}, "needs from_number or messaging_service_sid"),
        ({"auth_token": ""}, "auth_token must be a non-blank string"),
        ({"status_callback": "/status"}, "status_callback must be an absolute http"),
        ({"base_url": "api.twilio.com"}, "base_url must be an absolute http"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": "+15005550001",
        **kwargs,
    }
    with pytest.raises(ConfigurationError, match=message):
        TwilioSmsAdapter(**settings)  # type: ignore[arg-type]
