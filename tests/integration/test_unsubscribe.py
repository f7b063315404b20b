"""Unsubscribe (design §13, RFC 8058): signed links in every non-critical send, the one-click
POST and the confirmation page on ``chimeway serve`` (uvicorn on a free port, a real SMTP
server taking the mail), and the rule a link, a complaint and an unsubscribe webhook write:
the same one."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from chimeway import (
    Chimeway,
    ConfigurationError,
    DeliveryReason,
    DeliveryStatus,
    InvalidToken,
    SmtpAdapter,
    TokenExpired,
    Triggered,
)
from chimeway.policy import PreferenceScope, TokenSigner, UnsubscribeClaims
from chimeway.testing import RecordingAdapter, drain
from tests.adapters.conftest import SmtpServer, free_port
from tests.integration.conftest import Uvicorns
from tests.integration.notifiers import Welcome
from tests.integration.webhook_support import PROVIDER, receipt

Conn = Any
SECRET = "a-secret-of-at-least-thirty-two-bytes!"
OLD_SECRET = "the-secret-we-used-before-rotation!!"
PUBLIC = "https://notify.example.test/chimeway"


class Digest(Welcome):
    """A notifier without a category: its link is about its workflow (its key)."""

    key = "weekly_digest"
    category = None


class Reset(Welcome):
    key = "password_reset"
    category = "security"
    critical = True


@pytest.fixture
def cw(make_tx_cw: Callable[..., Chimeway]) -> Chimeway:
    return make_tx_cw(
        secret=[SECRET, OLD_SECRET], public_url=PUBLIC + "/", webhook_providers=[PROVIDER]
    )


def sent(cw: Chimeway, db: Conn, notifier: Any, key: str, user: str = "ana") -> uuid.UUID:
    result = cw.trigger(
        notifier,
        {"users": [user], "channels": ["email"]},
        tenant_id="t",
        idempotency_key=key,
        conn=db,
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=db)
    return result.delivery_ids[0]


def rules(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT recipient_id, channel, category, workflow, enabled, source"
        " FROM chimeway_preferences ORDER BY recipient_id, source"
    ).fetchall()


def test_each_send_carries_a_link_that_turns_off_its_category_or_its_workflow(
    cw: Chimeway, db: Conn, adapters: dict[str, RecordingAdapter]
) -> None:
    sent(cw, db, Welcome, "k1")
    sent(cw, db, Digest, "k2")
    sent(cw, db, Reset, "k3")
    welcome, digest, reset = adapters["email"].sent
    assert reset.unsubscribe_url is None  # one cannot opt out of a critical notifier
    for request in (welcome, digest):
        assert request.unsubscribe_url is not None
        assert request.unsubscribe_url.startswith(PUBLIC + "/v1/unsubscribe/v1.")
        token = request.unsubscribe_url.rsplit("/", 1)[1]
        cw.preferences.unsubscribe(token, conn=db)
    assert rules(db) == [
        ("ana", "email", "account", None, False, "unsubscribed:link"),
        ("ana", "email", None, "weekly_digest", False, "unsubscribed:link"),
    ]
    [again] = cw.trigger(
        Welcome,
        {"users": ["ana"], "channels": ["email"]},
        tenant_id="t",
        idempotency_key="k4",
        conn=db,
    ).delivery_ids  # type: ignore[union-attr]
    explained = cw.explain_delivery("t", again, conn=db)
    assert explained.suppression_reason == DeliveryReason.CATEGORY_DISABLED
    assert explained.why.startswith(
        "Not sent: ana unsubscribed from email for 'account' through an unsubscribe link at "
    )


def test_a_link_signed_with_the_old_secret_still_works_after_rotation(
    cw: Chimeway, db: Conn
) -> None:
    now = db.execute("SELECT now()").fetchone()[0]
    old = TokenSigner([OLD_SECRET]).sign_unsubscribe(
        UnsubscribeClaims("t", "ana", PreferenceScope("sms"), now + dt.timedelta(days=1))
    )
    rule = cw.preferences.unsubscribe(old, conn=db)
    assert (rule.channel, rule.enabled) == ("sms", False)
    forged = TokenSigner(["x" * 40]).sign_unsubscribe(
        UnsubscribeClaims("t", "ana", PreferenceScope("sms"), now + dt.timedelta(days=1))
    )
    with pytest.raises(InvalidToken, match="signature does not match"):
        cw.preferences.unsubscribe(forged, conn=db)


def test_tokens_and_urls_on_demand(cw: Chimeway, db: Conn) -> None:
    token = cw.preferences.unsubscribe_token(
        "t", "ana", category="marketing", ttl=dt.timedelta(days=30), conn=db
    )
    url = cw.preferences.unsubscribe_url(token)
    assert url == f"{PUBLIC}/v1/unsubscribe/{token}"
    claims = cw.engine.signer.verify_unsubscribe(  # type: ignore[union-attr]
        token, now=db.execute("SELECT now()").fetchone()[0]
    )
    assert claims.scope == PreferenceScope(category="marketing")
    assert dt.timedelta(days=29) < claims.expires_at - dt.datetime.now(dt.UTC)


def test_without_a_secret_or_a_public_url_there_are_no_links(
    make_tx_cw: Callable[..., Chimeway], db: Conn, adapters: dict[str, RecordingAdapter]
) -> None:
    plain = make_tx_cw()
    sent(plain, db, Welcome, "k1")
    assert adapters["email"].sent[0].unsubscribe_url is None
    with pytest.raises(ConfigurationError, match="unsubscribe tokens need a secret"):
        plain.preferences.unsubscribe_token("t", "ana", channel="email", conn=db)
    no_url = make_tx_cw(secret=SECRET)
    with pytest.raises(ConfigurationError, match="need public_url="):
        no_url.preferences.unsubscribe_url("v1.x")
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        make_tx_cw(secret="short")
    with pytest.raises(ConfigurationError, match="absolute http"):
        make_tx_cw(secret=SECRET, public_url="notify.example.test")


def test_a_complaint_and_an_unsubscribe_webhook_write_what_the_link_writes(
    cw: Chimeway, db: Conn, adapters: dict[str, RecordingAdapter]
) -> None:
    """Per message: its link, a complaint about it and the provider's unsubscribe event all
    turn off the same scope (the category, else the workflow, on its channel)."""
    for notifier, key in ((Welcome, "account"), (Digest, "weekly_digest")):
        by_link = sent(cw, db, notifier, f"{key}-link", user="ana")
        by_complaint = sent(cw, db, notifier, f"{key}-complaint", user="bob")
        by_webhook = sent(cw, db, notifier, f"{key}-unsubscribed", user="cy")
        link = next(r for r in adapters["email"].sent if r.delivery_id == by_link)
        assert link.unsubscribe_url is not None
        cw.preferences.unsubscribe(link.unsubscribe_url.rsplit("/", 1)[1], conn=db)
        for kind, delivery_id in (("complained", by_complaint), ("unsubscribed", by_webhook)):
            body, headers = receipt(kind, delivery_id)
            cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    scopes = {
        (recipient, channel, category, workflow)
        for recipient, channel, category, workflow, _, _ in rules(db)
    }
    assert scopes == {
        (who, "email", category, workflow)
        for who in ("ana", "bob", "cy")
        for category, workflow in (("account", None), (None, "weekly_digest"))
    }


# -- over HTTP, with a real mail ------------------------------------------------------------


@pytest.fixture
def serve(uvicorns: Uvicorns) -> Callable[[Chimeway, int], str]:
    """``serve(cw, port)``: uvicorn serving ``cw.asgi()`` on a thread; its base URL."""
    return lambda cw, port: uvicorns.start(cw.asgi(), port)


@pytest.fixture
def served(
    make_cw: Callable[..., Chimeway],
    smtp_server: SmtpServer,
    serve: Callable[[Chimeway, int], str],
) -> Iterator[tuple[Chimeway, str]]:
    """A Chimeway sending through a real SMTP server, whose public_url is the uvicorn server
    it is served on."""
    port = free_port()
    smtp = SmtpAdapter(smtp_server.host, smtp_server.port, security="none", sender="a@app.test")
    cw = make_cw(adapters={"email": smtp}, secret=SECRET, public_url=f"http://127.0.0.1:{port}")
    yield cw, serve(cw, port)
    smtp.close()


def test_one_click_from_the_mail_headers(
    served: tuple[Chimeway, str], smtp_server: SmtpServer, committed_db: str
) -> None:
    cw, base = served
    cw.recipients.upsert("t", "ana", email="ana@example.test")
    cw.trigger(
        Welcome, {"users": ["ana"], "channels": ["email"]}, tenant_id="t", idempotency_key="k1"
    )
    drain(cw)
    [mail] = smtp_server.mailbox.received
    header = mail.message["List-Unsubscribe"]
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert header.startswith(f"<{base}/v1/unsubscribe/v1.") and header.endswith(">")
    url = header[1:-1]

    page = httpx.get(url)  # a link scanner, or the person opening the link
    assert page.status_code == 200
    assert "Stop receiving email about &#x27;account&#x27;?" in page.text
    assert '<form method="post">' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert cw.preferences.get("t", "ana").rules == []  # GET changes nothing

    clicked = httpx.post(url, data={"List-Unsubscribe": "One-Click"})  # RFC 8058's POST
    assert clicked.status_code == 200
    assert "You will no longer receive email about" in clicked.text
    [rule] = cw.preferences.get("t", "ana").rules
    assert (rule.channel, rule.category, rule.enabled, rule.source) == (
        "email",
        "account",
        False,
        "unsubscribed:link",
    )
    assert httpx.post(url).status_code == 200  # clicking twice is harmless

    result = cw.trigger(
        Welcome, {"users": ["ana"], "channels": ["email"]}, tenant_id="t", idempotency_key="k2"
    )
    assert isinstance(result, Triggered)
    drain(cw)
    assert cw.delivery("t", result.delivery_ids[0]).status == DeliveryStatus.SUPPRESSED
    assert len(smtp_server.mailbox.received) == 1


def test_bad_and_expired_links(served: tuple[Chimeway, str], committed_db: str) -> None:
    cw, base = served
    assert cw.engine.signer is not None
    past = cw.engine.signer.sign_unsubscribe(
        UnsubscribeClaims(
            "t", "ana", PreferenceScope("email"), dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        )
    )
    with pytest.raises(TokenExpired):
        cw.preferences.unsubscribe(past)
    for method in ("GET", "POST"):
        expired = httpx.request(method, f"{base}/v1/unsubscribe/{past}")
        assert (expired.status_code, "has expired" in expired.text) == (410, True)
        forged = httpx.request(method, f"{base}/v1/unsubscribe/{past[:-2]}xx")
        assert (forged.status_code, "is not valid" in forged.text) == (400, True)
    assert cw.preferences.get("t", "ana").rules == []


def test_an_app_without_a_secret_answers_404(
    make_cw: Callable[..., Chimeway], serve: Callable[[Chimeway, int], str], committed_db: str
) -> None:
    base = serve(make_cw(), free_port())
    answer = httpx.post(f"{base}/v1/unsubscribe/v1.abc")
    assert answer.status_code == 404
    assert "not enabled" in answer.text
