"""SlackAdapter against a real local HTTP server standing in for Slack."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chimeway.adapters import (
    Permanent,
    ProviderAdapter,
    RecipientProfile,
    Sent,
    SlackAdapter,
    Temporary,
)
from chimeway.errors import ConfigurationError
from tests.adapters.conftest import HttpFactory, HttpServer, Reply, make_request

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Invoice* ready"}}]
CHAT = {"text": "Invoice ready", "rich_payload": {"blocks": BLOCKS}}
OK = {"ok": True, "channel": "C024BE91L", "ts": "1503435956.000247"}

OPENED: list[SlackAdapter] = []


@pytest.fixture(autouse=True)
def close_adapters(start_http: HttpFactory) -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def slack(**kwargs: object) -> SlackAdapter:
    adapter = SlackAdapter(timeout=5, **kwargs)  # type: ignore[arg-type]
    OPENED.append(adapter)
    return adapter


def bot(server: HttpServer, **kwargs: object) -> SlackAdapter:
    return slack(token="xoxb-test-token", base_url=server.url + "/api", **kwargs)


def test_incoming_webhook_posts_text_and_blocks(http_server: HttpServer) -> None:
    http_server.then(Reply(200, "ok"))
    adapter = slack(webhook_url=http_server.url + "/services/T0/B0/XYZ")

    sent = adapter.deliver(make_request("chat", CHAT))

    assert sent == Sent(provider_message_id=None, meta={"provider": "slack"})
    [received] = http_server.requests
    assert received.path == "/services/T0/B0/XYZ"
    assert received.headers["content-type"] == "application/json"
    assert received.json() == {"text": "Invoice ready", "blocks": BLOCKS}


def test_incoming_webhook_without_rich_payload_posts_text_only(http_server: HttpServer) -> None:
    slack(webhook_url=http_server.url + "/hook").deliver(make_request("chat", {"text": "Hi"}))

    assert http_server.requests[0].json() == {"text": "Hi"}


@pytest.mark.parametrize(
    ("reply", "failure", "error", "retry_after"),
    [
        (Reply(404, "channel_not_found"), Permanent, "channel_not_found", None),
        (Reply(410, "channel_is_archived"), Permanent, "channel_is_archived", None),
        (Reply(400, "invalid_payload"), Permanent, "invalid_payload", None),
        (Reply(403, "<html>Forbidden</html>"), Permanent, None, None),
        (Reply(429, "rate_limited", {"Retry-After": "30"}), Temporary, "rate_limited", 30.0),
        (Reply(500, "rollup_error"), Temporary, "rollup_error", None),
    ],
)
def test_incoming_webhook_answers(
    start_http: HttpFactory,
    reply: Reply,
    failure: type[Exception],
    error: str | None,
    retry_after: float | None,
) -> None:
    server = start_http(reply)

    with pytest.raises(failure) as raised:
        slack(webhook_url=server.url + "/hook", name="slack-ops").deliver(
            make_request("chat", CHAT)
        )

    meta = {"provider": "slack-ops", "status_code": reply.status}
    if error is not None:
        meta["slack_error"] = error
    assert type(raised.value) is failure
    assert raised.value.meta == meta  # type: ignore[attr-defined]
    assert raised.value.retry_after == retry_after  # type: ignore[attr-defined]


def test_post_message_sends_to_the_adapter_channel_with_the_bot_token(
    start_http: HttpFactory,
) -> None:
    server = start_http(Reply(200, OK))
    request = make_request("chat", CHAT, recipient=RecipientProfile(id="ada"))

    sent = bot(server, channel="#alerts").deliver(request)

    assert sent == Sent(
        provider_message_id="1503435956.000247",
        meta={"provider": "slack", "channel": "C024BE91L"},
    )
    [received] = server.requests
    assert received.path == "/api/chat.postMessage"
    assert received.headers["authorization"] == "Bearer xoxb-test-token"
    assert received.json() == {
        "text": "Invoice ready",
        "blocks": BLOCKS,
        "channel": "#alerts",
        "metadata": {
            "event_type": "chimeway_delivery",
            "event_payload": {"delivery_id": request.idempotency_key},
        },
    }


def test_post_message_prefers_the_recipient_channel(start_http: HttpFactory) -> None:
    server = start_http(Reply(200, OK))
    profile = RecipientProfile(id="ada", data={"slack_channel": "D0ADA"})

    bot(server, channel="#alerts").deliver(make_request("chat", CHAT, recipient=profile))
    bot(server).deliver(make_request("chat", CHAT, recipient=profile))

    assert [r.json()["channel"] for r in server.requests] == ["D0ADA", "D0ADA"]


def test_post_message_without_any_channel_is_permanent(http_server: HttpServer) -> None:
    with pytest.raises(Permanent, match="no Slack channel"):
        bot(http_server).deliver(make_request("chat", CHAT, recipient=RecipientProfile(id="a")))

    assert http_server.requests == []


@pytest.mark.parametrize(
    ("reply", "failure", "meta", "retry_after"),
    [
        (
            Reply(200, {"ok": False, "error": "channel_not_found"}),
            Permanent,
            {"slack_error": "channel_not_found"},
            None,
        ),
        (
            Reply(200, {"ok": False, "error": "invalid_auth"}),
            Permanent,
            {"slack_error": "invalid_auth"},
            None,
        ),
        (
            Reply(200, {"ok": False, "error": "not_in_channel"}),
            Permanent,
            {"slack_error": "not_in_channel"},
            None,
        ),
        (
            Reply(200, {"ok": False, "error": "internal_error"}),
            Temporary,
            {"slack_error": "internal_error"},
            None,
        ),
        (
            Reply(200, {"ok": False, "error": "ratelimited"}, {"Retry-After": "12"}),
            Temporary,
            {"slack_error": "ratelimited"},
            12.0,
        ),
        (
            Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3"}),
            Temporary,
            {"status_code": 429},
            3.0,
        ),
        (Reply(503, "upstream down"), Temporary, {"status_code": 503}, None),
        (Reply(404, "<html>not here</html>"), Permanent, {"status_code": 404}, None),
        (Reply(200, "not json"), Permanent, {"status_code": 200}, None),
    ],
)
def test_post_message_answers(
    start_http: HttpFactory,
    reply: Reply,
    failure: type[Exception],
    meta: dict[str, object],
    retry_after: float | None,
) -> None:
    server = start_http(reply)

    with pytest.raises(failure) as raised:
        bot(server, channel="C1").deliver(make_request("chat", CHAT))

    assert type(raised.value) is failure
    assert raised.value.meta == {"provider": "slack", **meta}  # type: ignore[attr-defined]
    assert raised.value.retry_after == retry_after  # type: ignore[attr-defined]
    assert "xoxb" not in str(raised.value)


def test_slack_slower_than_the_timeout_is_temporary(http_server: HttpServer) -> None:
    release = threading.Event()
    http_server.then(Reply(200, OK, hold=release))
    adapter = SlackAdapter(token="xoxb-t", channel="C1", base_url=http_server.url, timeout=0.5)
    OPENED.append(adapter)

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request("chat", CHAT))

    release.set()
    assert raised.value.meta == {"provider": "slack", "timeout": True}


def test_content_that_is_not_chat_content_is_permanent(http_server: HttpServer) -> None:
    adapter = slack(webhook_url=http_server.url)

    with pytest.raises(Permanent, match="chat content is invalid: text: Field required"):
        adapter.deliver(make_request("chat", {"body": "Hi"}))

    assert http_server.requests == []


def test_is_a_provider_adapter_with_its_settings() -> None:
    adapter = SlackAdapter(token="xoxb-t", channel="C1")
    OPENED.append(adapter)

    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.name, adapter.timeout, adapter.capacity) == ("slack", 10.0, 10)
    assert adapter.base_url == "https://slack.com/api"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of webhook_url or token"),
        ({"webhook_url": "https://h.test/x", "token": "t"}, "exactly one of webhook_url or token"),
        ({"webhook_url": "https://h.test/x", "channel": "C1"}, "channel applies to token mode"),
        ({"webhook_url": "hooks.slack.com/x"}, "webhook_url must be an absolute http"),
        ({"token": " "}, "token must be a non-blank string"),
        ({"token": "t", "base_url": "slack"}, "base_url must be an absolute http"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SlackAdapter(**kwargs)  # type: ignore[arg-type]
