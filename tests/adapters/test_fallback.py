"""FallbackAdapter over real adapters talking to real local servers."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator

import pytest

from chimeway.adapters import (
    Bounced,
    DeliveryRequest,
    FallbackAdapter,
    LoggerAdapter,
    Permanent,
    ProviderAdapter,
    Sent,
    SmtpAdapter,
    Temporary,
    TwilioSmsAdapter,
    WebhookAdapter,
)
from chimeway.errors import ConfigurationError
from tests.adapters.conftest import (
    ADDRESS,
    HttpFactory,
    Reply,
    SmtpFactory,
    SmtpServer,
    make_request,
)

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OPENED: list[WebhookAdapter | SmtpAdapter] = []


@pytest.fixture(autouse=True)
def close_adapters(start_http: HttpFactory, start_smtp: SmtpFactory) -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def hook(url: str, name: str, timeout: float = 5) -> WebhookAdapter:
    adapter = WebhookAdapter(url, secret=SECRET, name=name, timeout=timeout, capacity=3)
    OPENED.append(adapter)
    return adapter


class Broken:
    """A provider with a bug: it raises something that is not a DeliveryFailure."""

    name = "broken"
    timeout = 1.0
    capacity = 2

    def deliver(self, request: DeliveryRequest) -> Sent:
        raise RuntimeError("bug in the provider client")


def test_fails_over_to_the_next_provider_after_a_temporary_failure(
    start_http: HttpFactory,
) -> None:
    primary = start_http(Reply(503, headers={"Retry-After": "20"}))
    secondary = start_http(Reply(202))
    adapter = FallbackAdapter([hook(primary.url, "primary"), hook(secondary.url, "secondary")])
    request = make_request()

    sent = adapter.deliver(request)

    assert sent.meta == {
        "provider": "secondary",
        "status_code": 202,
        "failover": [
            {
                "provider": "primary",
                "error_class": "temporary",
                "error": "primary: endpoint answered HTTP 503",
            }
        ],
    }
    assert len(primary.requests) == len(secondary.requests) == 1
    assert secondary.requests[0].headers["webhook-id"] == request.idempotency_key


def test_a_failover_is_logged_with_ids_only(
    start_http: HttpFactory, caplog: pytest.LogCaptureFixture
) -> None:
    primary, secondary = start_http(Reply(503)), start_http()
    adapter = FallbackAdapter([hook(primary.url, "primary"), hook(secondary.url, "secondary")])
    request = make_request()

    with caplog.at_level(logging.INFO, logger="chimeway.adapters.fallback"):
        adapter.deliver(request)

    [record] = caplog.records
    assert record.__dict__["action"] == "adapter.failover"
    assert record.__dict__["provider"] == "primary"
    assert record.__dict__["delivery_id"] == str(request.delivery_id)
    assert ADDRESS not in caplog.text


def test_the_first_provider_that_accepts_ends_it(start_http: HttpFactory) -> None:
    primary, secondary = start_http(), start_http()
    adapter = FallbackAdapter([hook(primary.url, "primary"), hook(secondary.url, "secondary")])

    sent = adapter.deliver(make_request())

    assert sent.meta == {"provider": "primary", "status_code": 200, "failover": []}
    assert secondary.requests == []


def test_a_timeout_fails_over(start_http: HttpFactory) -> None:
    release = threading.Event()
    primary = start_http().then(Reply(200, hold=release))
    secondary = start_http()
    adapter = FallbackAdapter(
        [hook(primary.url, "primary", timeout=0.5), hook(secondary.url, "secondary")]
    )

    sent = adapter.deliver(make_request())

    release.set()
    assert sent.meta["provider"] == "secondary"
    [tried] = sent.meta["failover"]
    assert tried["provider"] == "primary"
    assert tried["error_class"] == "temporary"
    assert "no answer in time" in tried["error"]


def test_a_permanent_answer_stops_without_trying_the_next(start_http: HttpFactory) -> None:
    primary = start_http(Reply(422))
    secondary = start_http()
    adapter = FallbackAdapter([hook(primary.url, "primary"), hook(secondary.url, "secondary")])

    with pytest.raises(Permanent) as raised:
        adapter.deliver(make_request())

    assert raised.value.meta == {"provider": "primary", "status_code": 422, "failover": []}
    assert secondary.requests == []


def test_a_bounce_after_a_failover_keeps_the_list(start_smtp: SmtpFactory) -> None:
    primary, secondary = start_smtp(), start_smtp()
    primary.mailbox.rcpt_answer = "451 4.7.1 Greylisted, try later"
    secondary.mailbox.rcpt_answer = "550 5.1.1 No such user"
    adapter = FallbackAdapter([smtp(primary, "smtp-a"), smtp(secondary, "smtp-b")])

    with pytest.raises(Bounced) as raised:
        adapter.deliver(make_request())

    assert raised.value.meta["provider"] == "smtp-b"
    assert [t["provider"] for t in raised.value.meta["failover"]] == ["smtp-a"]
    assert raised.value.meta["failover"][0]["error_class"] == "temporary"


def test_smtp_failover_delivers_through_the_second_relay(start_smtp: SmtpFactory) -> None:
    primary, secondary = start_smtp(), start_smtp()
    primary.mailbox.data_answer = "421 4.3.2 System not accepting network messages"
    adapter = FallbackAdapter([smtp(primary, "smtp"), smtp(secondary, "postmark-smtp")])
    request = make_request()

    sent = adapter.deliver(request)

    assert sent.provider_message_id == f"<{request.delivery_id}@acme.test>"
    assert sent.meta["provider"] == "postmark-smtp"
    assert [t["provider"] for t in sent.meta["failover"]] == ["smtp"]
    assert len(secondary.mailbox.received) == 1


def test_when_every_provider_fails_temporarily_the_smallest_retry_after_wins(
    start_http: HttpFactory,
) -> None:
    first = start_http(Reply(503, headers={"Retry-After": "30"}))
    second = start_http(Reply(429, headers={"Retry-After": "5"}))
    third = start_http(Reply(500))
    adapter = FallbackAdapter(
        [hook(first.url, "a"), hook(second.url, "b"), hook(third.url, "c")], name="email-relays"
    )

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request())

    assert raised.value.retry_after == 5.0
    assert raised.value.meta["provider"] == "email-relays"
    assert [t["provider"] for t in raised.value.meta["failover"]] == ["a", "b", "c"]
    assert "every provider failed temporarily (a, b, c)" in str(raised.value)


def test_a_provider_bug_counts_as_a_temporary_failure(start_http: HttpFactory) -> None:
    server = start_http()
    adapter = FallbackAdapter([Broken(), hook(server.url, "backup")])

    sent = adapter.deliver(make_request())

    assert sent.meta["failover"] == [
        {
            "provider": "broken",
            "error_class": "unknown",
            "error": "RuntimeError: bug in the provider client",
        }
    ]


def test_timeout_is_the_sum_and_capacity_the_smallest_unless_given() -> None:
    a, b = hook("https://a.test/", "a", timeout=2), hook("https://b.test/", "b", timeout=3)

    adapter = FallbackAdapter([a, b, LoggerAdapter(capacity=5)])

    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.name, adapter.timeout, adapter.capacity) == ("fallback", 6.0, 3)
    given = FallbackAdapter([a, b], timeout=4, capacity=8)
    assert (given.timeout, given.capacity) == (4.0, 8)


def test_bad_providers_are_configuration_errors() -> None:
    class NoSettings:
        def deliver(self, request: DeliveryRequest) -> Sent:
            return Sent()

    with pytest.raises(ConfigurationError, match="at least one provider"):
        FallbackAdapter([])
    with pytest.raises(ConfigurationError, match="provider 1 has no deliver"):
        FallbackAdapter([LoggerAdapter(), object()])
    with pytest.raises(ConfigurationError, match="'NoSettings' has no timeout"):
        FallbackAdapter([NoSettings()])
    assert FallbackAdapter([NoSettings()], timeout=1, capacity=1).capacity == 1


def smtp(server: SmtpServer, name: str) -> SmtpAdapter:
    adapter = SmtpAdapter(
        server.host,
        server.port,
        sender="noreply@acme.test",
        security="none",
        name=name,
        timeout=5,
    )
    OPENED.append(adapter)
    return adapter


def test_the_address_a_fallback_needs_is_its_providers_when_they_agree() -> None:
    def smtp(name: str) -> SmtpAdapter:
        return SmtpAdapter("smtp.test", sender="a@b.test", name=name)

    assert SmtpAdapter.address == "email"
    assert TwilioSmsAdapter.address == "phone"
    assert FallbackAdapter([smtp("one"), smtp("two")]).address == "email"
    sms_or_log = FallbackAdapter(
        [
            TwilioSmsAdapter(account_sid="AC1", auth_token="t", from_number="+15005550006"),
            LoggerAdapter(),
        ]
    )
    assert sms_or_log.address is None  # the logger needs none: planning cannot suppress
