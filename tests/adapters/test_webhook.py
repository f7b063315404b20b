"""WebhookAdapter against a real local HTTP server; signatures checked by the
``standardwebhooks`` reference library on the receiving side."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import standardwebhooks

from chimeway.adapters import (
    Permanent,
    ProviderAdapter,
    RecipientProfile,
    Sent,
    Temporary,
    WebhookAdapter,
)
from chimeway.adapters.http_calls import parse_retry_after
from chimeway.adapters.standard_webhooks import decode_secret, signature
from chimeway.errors import ConfigurationError
from tests.adapters.conftest import (
    ADDRESS,
    EMAIL,
    PHONE,
    HttpFactory,
    HttpServer,
    Reply,
    free_port,
    make_request,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()

OPENED: list[WebhookAdapter] = []


@pytest.fixture(autouse=True)
def close_adapters(start_http: HttpFactory) -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def webhook(url: str | None, **kwargs: object) -> WebhookAdapter:
    adapter = WebhookAdapter(url, secret=kwargs.pop("secret", SECRET), timeout=5, **kwargs)  # type: ignore[arg-type]
    OPENED.append(adapter)
    return adapter


def test_posts_signed_json_the_receiver_can_verify(http_server: HttpServer) -> None:
    adapter = webhook(http_server.url + "/hooks/chimeway")
    request = make_request(attempt_number=3)

    sent = adapter.deliver(request)

    assert sent == Sent(meta={"provider": "webhook", "status_code": 200})
    [received] = http_server.requests
    assert received.path == "/hooks/chimeway"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"] == request.idempotency_key
    assert received.headers["idempotency-key"] == request.idempotency_key
    payload = standardwebhooks.Webhook(SECRET).verify(received.body, received.headers)
    assert payload == {
        "type": "chimeway.delivery",
        "data": {
            "delivery_id": str(request.delivery_id),
            "tenant_id": "acme",
            "recipient_id": "ada",
            "channel": "email",
            "content": EMAIL,
            "attempt_number": 3,
        },
    }
    assert ADDRESS.encode() not in received.body
    assert PHONE.encode() not in received.body


def test_a_tampered_body_does_not_verify(http_server: HttpServer) -> None:
    webhook(http_server.url).deliver(make_request())
    [received] = http_server.requests

    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(
            received.body.replace(b"acme", b"evil"), received.headers
        )


def test_signs_with_every_secret_while_rotating(http_server: HttpServer) -> None:
    webhook(http_server.url, secret=[SECRET, OLD_SECRET]).deliver(make_request())
    [received] = http_server.requests

    assert len(received.headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        assert standardwebhooks.Webhook(secret).verify(received.body, received.headers)


def test_the_address_is_sent_only_when_asked(http_server: HttpServer) -> None:
    adapter = webhook(http_server.url, include_address=True, event_type="acme.notify")

    adapter.deliver(make_request())

    body = http_server.requests[0].json()
    assert body["type"] == "acme.notify"
    assert body["data"]["recipient"] == {"email": ADDRESS, "phone": PHONE}


def test_extra_headers_go_along(http_server: HttpServer) -> None:
    webhook(http_server.url, headers={"X-Tenant": "acme"}).deliver(make_request())

    assert http_server.requests[0].headers["x-tenant"] == "acme"


def test_retries_keep_the_webhook_id(http_server: HttpServer) -> None:
    adapter = webhook(http_server.url)
    first = make_request()
    retry = make_request(attempt_number=2)
    retry = type(retry)(**{**retry.__dict__, "delivery_id": first.delivery_id})

    adapter.deliver(first)
    adapter.deliver(retry)

    ids = {r.headers["webhook-id"] for r in http_server.requests}
    assert ids == {first.idempotency_key}


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_sent(start_http: HttpFactory, status: int) -> None:
    server = start_http(Reply(status))

    sent = webhook(server.url).deliver(make_request())

    assert sent.meta == {"provider": "webhook", "status_code": status}


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply(503, headers={"Retry-After": "7"}), 7.0),
        (Reply(429, headers={"Retry-After": "120"}), 120.0),
        (Reply(408), None),
        (Reply(500, headers={"Retry-After": "soon"}), None),
        (Reply(502), None),
    ],
)
def test_retryable_answers_are_temporary_with_retry_after(
    start_http: HttpFactory, reply: Reply, retry_after: float | None
) -> None:
    server = start_http(reply)

    with pytest.raises(Temporary) as raised:
        webhook(server.url, name="partner-hook").deliver(make_request())

    assert raised.value.retry_after == retry_after
    assert raised.value.meta == {"provider": "partner-hook", "status_code": reply.status}
    assert str(reply.status) in str(raised.value)


def test_retry_after_as_an_http_date(start_http: HttpFactory) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    server = start_http(Reply(503, headers={"Retry-After": format_datetime(when, usegmt=True)}))

    with pytest.raises(Temporary) as raised:
        webhook(server.url).deliver(make_request())

    assert raised.value.retry_after is not None
    assert 80 <= raised.value.retry_after <= 90


@pytest.mark.parametrize("status", [301, 400, 401, 404, 410, 422])
def test_other_answers_are_permanent(start_http: HttpFactory, status: int) -> None:
    server = start_http(Reply(status, headers={"Location": "http://127.0.0.1:1/"}))

    with pytest.raises(Permanent) as raised:
        webhook(server.url).deliver(make_request())

    assert raised.value.meta == {"provider": "webhook", "status_code": status}
    assert raised.value.retry_after is None


def test_an_endpoint_slower_than_the_timeout_is_temporary(http_server: HttpServer) -> None:
    release = threading.Event()
    http_server.then(Reply(200, hold=release))
    adapter = WebhookAdapter(http_server.url, secret=SECRET, timeout=0.5)
    OPENED.append(adapter)

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request())

    release.set()
    assert raised.value.meta == {"provider": "webhook", "timeout": True}
    assert len(http_server.requests) == 1


def test_nobody_listening_is_temporary() -> None:
    with pytest.raises(Temporary, match="ConnectError") as raised:
        webhook(f"http://127.0.0.1:{free_port()}/").deliver(make_request())

    assert raised.value.meta == {"provider": "webhook"}


def test_one_adapter_serves_many_threads_at_once(http_server: HttpServer) -> None:
    adapter = webhook(http_server.url, capacity=4)
    requests = [make_request() for _ in range(12)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(adapter.deliver, requests))

    assert all(isinstance(r, Sent) for r in results)
    assert {r.headers["webhook-id"] for r in http_server.requests} == {
        r.idempotency_key for r in requests
    }


def test_a_recipient_can_have_their_own_url(start_http: HttpFactory) -> None:
    default, own = start_http(), start_http()
    adapter = webhook(default.url, url_from_recipient=True)
    profile = RecipientProfile(id="ada", data={"webhook_url": own.url + "/mine"})

    adapter.deliver(make_request(recipient=profile))
    adapter.deliver(make_request(recipient=RecipientProfile(id="bob")))

    assert [r.path for r in own.requests] == ["/mine"]
    assert len(default.requests) == 1


def test_the_recipient_url_is_ignored_unless_enabled(start_http: HttpFactory) -> None:
    default, own = start_http(), start_http()
    profile = RecipientProfile(id="ada", data={"webhook_url": own.url})

    webhook(default.url).deliver(make_request(recipient=profile))

    assert (len(default.requests), len(own.requests)) == (1, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "the recipient has no 'webhook_url'"),
        ({"webhook_url": "ftp://files.example.test/"}, "is not an absolute http"),
        ({"webhook_url": 42}, "is not an absolute http"),
    ],
)
def test_a_recipient_without_a_usable_url_is_permanent(
    data: dict[str, object], message: str
) -> None:
    adapter = webhook(None, url_from_recipient=True)

    with pytest.raises(Permanent, match=message) as raised:
        adapter.deliver(make_request(recipient=RecipientProfile(id="ada", data=data)))

    assert "files.example.test" not in str(raised.value)


def test_content_that_is_not_json_is_permanent(http_server: HttpServer) -> None:
    with pytest.raises(Permanent, match="not JSON-serializable"):
        webhook(http_server.url).deliver(make_request(content={"when": datetime.now(UTC)}))

    assert http_server.requests == []


def test_is_a_provider_adapter_with_its_settings() -> None:
    adapter = webhook("https://hooks.acme.test/")

    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.name, adapter.timeout, adapter.capacity) == ("webhook", 5.0, 10)


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        (None, {}, "url is required unless url_from_recipient=True"),
        ("hooks.acme.test/x", {}, "url must be an absolute http"),
        ("https://h.test/", {"secret": "k" * 40}, "must be a string starting with 'whsec_'"),
        ("https://h.test/", {"secret": "whsec_!!!"}, "not valid base64"),
        ("https://h.test/", {"secret": "whsec_" + base64.b64encode(b"short").decode()}, "got 5"),
        ("https://h.test/", {"secret": []}, "at least one secret"),
        ("https://h.test/", {"capacity": 0}, "capacity must be an integer >= 1"),
        ("https://h.test/", {"event_type": ""}, "event_type must be a non-blank string"),
        (
            "https://h.test/",
            {"headers": {"Webhook-Signature": "v1,forged", "X-Ok": "1"}},
            "headers may not set Webhook-Signature",
        ),
    ],
)
def test_bad_settings_are_configuration_errors(
    url: str | None, kwargs: dict[str, object], message: str
) -> None:
    settings: dict[str, object] = {"secret": SECRET, **kwargs}
    with pytest.raises(ConfigurationError, match=message) as raised:
        WebhookAdapter(url, **settings)  # type: ignore[arg-type]

    assert "!!!" not in str(raised.value)


def test_the_signature_matches_the_reference_library() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = '{"a":"é"}'

    ours = signature(decode_secret(SECRET), "msg_1", int(when.timestamp()), body.encode())

    assert ours == standardwebhooks.Webhook(SECRET).sign("msg_1", when, body)


def test_an_unpadded_secret_is_accepted() -> None:
    unpadded = "whsec_" + base64.b64encode(b"u" * 25).decode().rstrip("=")

    assert decode_secret(unpadded) == b"u" * 25


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("tomorrow", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)

    assert parse_retry_after(value, now) == seconds
