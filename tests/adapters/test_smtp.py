"""SmtpAdapter against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator

import pytest

from chimeway.adapters import (
    Bounced,
    Permanent,
    ProviderAdapter,
    RecipientProfile,
    Sent,
    SmtpAdapter,
    Temporary,
)
from chimeway.adapters.smtp import classify_reply, enhanced_status
from chimeway.errors import ConfigurationError
from tests.adapters.conftest import ADDRESS, EMAIL, SmtpFactory, SmtpServer, free_port, make_request

OPENED: list[SmtpAdapter] = []


@pytest.fixture(autouse=True)
def close_adapters(start_smtp: SmtpFactory) -> Iterator[None]:
    """Every adapter a test opens is closed after it (before its servers stop), so no
    socket outlives its test."""
    yield
    while OPENED:
        OPENED.pop().close()


def opened(adapter: SmtpAdapter) -> SmtpAdapter:
    OPENED.append(adapter)
    return adapter


def plain(server: SmtpServer, **kwargs: object) -> SmtpAdapter:
    return opened(
        SmtpAdapter(
            server.host,
            server.port,
            sender="Acme <noreply@acme.test>",
            security="none",
            timeout=5,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def test_sends_a_multipart_message_with_the_delivery_headers(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)
    request = make_request(unsubscribe_url="https://acme.test/u/tok123")

    sent = adapter.deliver(request)

    assert sent == Sent(
        provider_message_id=f"<{request.delivery_id}@acme.test>", meta={"provider": "smtp"}
    )
    [received] = smtp_server.mailbox.received
    assert received.mail_from == "noreply@acme.test"
    assert received.rcpt_tos == [ADDRESS]
    message = received.message
    assert message["From"] == "Acme <noreply@acme.test>"
    assert message["To"] == ADDRESS
    assert message["Subject"] == EMAIL["subject"]
    assert message["Message-ID"] == f"<{request.delivery_id}@acme.test>"
    assert message["List-Unsubscribe"] == "<https://acme.test/u/tok123>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content().strip() for p in message.iter_parts()}
    assert parts == {"text/plain": EMAIL["text_body"], "text/html": EMAIL["html_body"]}


def test_no_unsubscribe_headers_without_a_url_and_a_chosen_message_id_domain(
    smtp_server: SmtpServer,
) -> None:
    adapter = plain(smtp_server, message_id_domain="mail.acme.test", name="postmark-smtp")
    request = make_request()

    sent = adapter.deliver(request)

    message = smtp_server.mailbox.received[0].message
    assert "List-Unsubscribe" not in message
    assert "List-Unsubscribe-Post" not in message
    assert message["Message-ID"] == f"<{request.delivery_id}@mail.acme.test>"
    assert sent.provider_message_id == message["Message-ID"]
    assert sent.meta == {"provider": "postmark-smtp"}


def test_the_same_delivery_keeps_its_message_id_on_a_retry(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)
    first = make_request()
    retry = make_request(attempt_number=2)
    retry = type(retry)(**{**retry.__dict__, "delivery_id": first.delivery_id})

    adapter.deliver(first)
    adapter.deliver(retry)

    ids = [r.message["Message-ID"] for r in smtp_server.mailbox.received]
    assert ids == [f"<{first.delivery_id}@acme.test>"] * 2


def test_two_sends_on_one_thread_share_one_smtp_session(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)

    adapter.deliver(make_request())
    adapter.deliver(make_request())

    assert smtp_server.mailbox.connections == 1
    assert [r.connection for r in smtp_server.mailbox.received] == [0, 0]


def test_each_send_thread_has_its_own_connection(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)
    adapter.deliver(make_request())
    other = threading.Thread(target=adapter.deliver, args=(make_request(),))
    other.start()
    other.join(timeout=10)

    assert len(smtp_server.mailbox.received) == 2
    assert smtp_server.mailbox.connections == 2


def test_reconnects_once_when_the_server_dropped_the_connection(
    smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = plain(smtp_server)
    adapter.deliver(make_request())
    smtp_server.mailbox.drop_connections()
    request = make_request()

    with caplog.at_level(logging.INFO, logger="chimeway.adapters.smtp"):
        sent = adapter.deliver(request)

    assert sent.provider_message_id == f"<{request.delivery_id}@acme.test>"
    assert [r.connection for r in smtp_server.mailbox.received] == [0, 1]
    [record] = [r for r in caplog.records if getattr(r, "action", "") == "adapter.smtp_reconnect"]
    assert record.delivery_id == str(request.delivery_id)  # type: ignore[attr-defined]
    assert ADDRESS not in caplog.text


def test_reconnects_once_after_a_421_on_a_reused_connection(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)
    adapter.deliver(make_request())
    smtp_server.mailbox.mail_answer = "421 4.4.2 Idle timeout exceeded, closing"

    adapter.deliver(make_request())

    assert [r.connection for r in smtp_server.mailbox.received] == [0, 1]


def test_a_421_on_a_new_connection_is_temporary(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)
    smtp_server.mailbox.mail_answer = "421 4.3.2 Service shutting down"

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request())

    assert raised.value.meta["smtp_stage"] == "mail"
    adapter.deliver(make_request())  # the closed connection was forgotten
    assert len(smtp_server.mailbox.received) == 1


def test_a_server_slower_than_the_timeout_is_temporary_and_not_retried(
    smtp_server: SmtpServer,
) -> None:
    adapter = plain(smtp_server)
    adapter.timeout = 0.5
    adapter.deliver(make_request())  # a reused connection must not be retried on a timeout
    smtp_server.mailbox.hold = threading.Event()

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request())

    smtp_server.mailbox.hold.set()
    assert raised.value.meta == {"provider": "smtp", "timeout": True}
    assert smtp_server.mailbox.connections == 1


def test_close_quits_the_connections_and_the_next_send_opens_a_new_one(
    smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = plain(smtp_server)
    adapter.deliver(make_request())

    adapter.close()
    with caplog.at_level(logging.INFO, logger="chimeway.adapters.smtp"):
        adapter.deliver(make_request())

    assert smtp_server.mailbox.connections == 2
    assert caplog.records == []  # a new connection, not a reconnect


@pytest.mark.parametrize(
    ("answer", "failure", "enhanced"),
    [
        ("451 4.3.0 Try again later", Temporary, "4.3.0"),
        ("554 Transaction failed", Permanent, None),
        ("550 5.1.1 <ada@example.test>: Recipient address rejected", Bounced, "5.1.1"),
        ("550 No such user here", Bounced, None),
        ("553 Mailbox name not allowed", Bounced, None),
        ("550 5.7.1 Relaying denied", Permanent, "5.7.1"),
        ("552 5.2.2 Mailbox full", Permanent, "5.2.2"),
    ],
)
def test_recipient_refusals_map_to_failure_classes(
    smtp_server: SmtpServer,
    answer: str,
    failure: type[Exception],
    enhanced: str | None,
) -> None:
    smtp_server.mailbox.rcpt_answer = answer
    adapter = plain(smtp_server)

    with pytest.raises(failure) as raised:
        adapter.deliver(make_request())

    code = int(answer[:3])
    assert type(raised.value) is failure
    assert raised.value.meta["provider"] == "smtp"  # type: ignore[attr-defined]
    assert raised.value.meta["smtp_code"] == code  # type: ignore[attr-defined]
    assert raised.value.meta["smtp_stage"] == "rcpt"  # type: ignore[attr-defined]
    assert raised.value.meta.get("smtp_enhanced_status") == enhanced  # type: ignore[attr-defined]
    assert str(code) in str(raised.value)
    assert ADDRESS not in str(raised.value)
    assert smtp_server.mailbox.received == []


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        ("451 Local error in processing", Temporary),
        ("554 5.6.0 Message rejected as spam", Permanent),
        ("550 5.1.1 Unknown user (checked after data)", Bounced),
        ("550 Content rejected", Permanent),
    ],
)
def test_data_refusals_map_to_failure_classes(
    smtp_server: SmtpServer, answer: str, failure: type[Exception]
) -> None:
    smtp_server.mailbox.data_answer = answer
    adapter = plain(smtp_server)

    with pytest.raises(failure) as raised:
        adapter.deliver(make_request())

    assert type(raised.value) is failure
    assert raised.value.meta["smtp_stage"] == "data"  # type: ignore[attr-defined]


def test_a_refusal_keeps_the_connection_for_the_next_send(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)
    smtp_server.mailbox.data_answer = "451 Try again"
    with pytest.raises(Temporary):
        adapter.deliver(make_request())

    smtp_server.mailbox.data_answer = None
    adapter.deliver(make_request())

    assert smtp_server.mailbox.connections == 1
    assert len(smtp_server.mailbox.received) == 1


def test_starttls_with_a_certificate_the_context_trusts(
    start_smtp: SmtpFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = start_smtp(tls=server_tls, users={"acme": "s3cret"})
    adapter = opened(
        SmtpAdapter(
            server.host,
            server.port,
            sender="noreply@acme.test",
            security="starttls",
            ssl_context=client_tls,
            username="acme",
            password="s3cret",
            timeout=5,
        )
    )

    adapter.deliver(make_request())

    assert len(server.mailbox.received) == 1


def test_starttls_refuses_a_certificate_it_does_not_trust(
    start_smtp: SmtpFactory, server_tls: ssl.SSLContext
) -> None:
    server = start_smtp(tls=server_tls)
    adapter = opened(
        SmtpAdapter(
            server.host, server.port, sender="noreply@acme.test", security="starttls", timeout=5
        )
    )

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request())

    assert "SSLCertVerificationError" in str(raised.value)
    assert server.mailbox.received == []


def test_a_wrong_password_is_permanent(
    start_smtp: SmtpFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = start_smtp(tls=server_tls, users={"acme": "s3cret"})
    adapter = opened(
        SmtpAdapter(
            server.host,
            server.port,
            sender="noreply@acme.test",
            ssl_context=client_tls,
            username="acme",
            password="wrong",
            timeout=5,
        )
    )

    with pytest.raises(Permanent) as raised:
        adapter.deliver(make_request())

    assert raised.value.meta["smtp_code"] == 535
    assert raised.value.meta["smtp_stage"] == "session"
    assert "wrong" not in str(raised.value)


def test_implicit_tls(
    start_smtp: SmtpFactory, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = start_smtp(tls=server_tls, implicit_tls=True)
    adapter = opened(
        SmtpAdapter(
            server.host,
            server.port,
            sender="noreply@acme.test",
            security="ssl",
            ssl_context=client_tls,
            timeout=5,
        )
    )

    adapter.deliver(make_request())

    assert len(server.mailbox.received) == 1


def test_starttls_required_but_not_offered_is_permanent(smtp_server: SmtpServer) -> None:
    adapter = opened(
        SmtpAdapter(smtp_server.host, smtp_server.port, sender="noreply@acme.test", timeout=5)
    )

    with pytest.raises(Permanent) as raised:
        adapter.deliver(make_request())

    assert "STARTTLS" in str(raised.value)


def test_nobody_listening_is_temporary() -> None:
    adapter = opened(
        SmtpAdapter(
            "127.0.0.1", free_port(), sender="noreply@acme.test", security="none", timeout=5
        )
    )

    with pytest.raises(Temporary) as raised:
        adapter.deliver(make_request())

    assert raised.value.meta == {"provider": "smtp"}


def test_a_recipient_without_an_email_address_is_permanent(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)

    for recipient in (RecipientProfile(id="ada", phone="+15005550006"), None):
        request = make_request()
        request = type(request)(**{**request.__dict__, "recipient": recipient})
        with pytest.raises(Permanent, match="no email address"):
            adapter.deliver(request)

    assert smtp_server.mailbox.connections == 0


def test_a_malformed_address_bounces_without_showing_it(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)

    with pytest.raises(Bounced) as raised:
        adapter.deliver(make_request(recipient=RecipientProfile(id="ada", email="ada-at-home")))

    assert "ada-at-home" not in str(raised.value)
    assert smtp_server.mailbox.connections == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"subject": "Hi"}, "html_body"),
        ({**EMAIL, "subject": "Hi\r\nBcc: eve@example.test"}, "subject contains a line break"),
    ],
)
def test_content_that_cannot_make_an_email_is_permanent(
    smtp_server: SmtpServer, content: dict[str, str], problem: str
) -> None:
    adapter = plain(smtp_server)

    with pytest.raises(Permanent, match=problem) as raised:
        adapter.deliver(make_request(content=content))

    assert "eve@" not in str(raised.value)
    assert smtp_server.mailbox.connections == 0


def test_an_unsubscribe_url_with_a_line_break_is_permanent(smtp_server: SmtpServer) -> None:
    adapter = plain(smtp_server)

    with pytest.raises(Permanent, match="unsubscribe_url contains a line break"):
        adapter.deliver(make_request(unsubscribe_url="https://acme.test/u\r\nX-Evil: 1"))


def test_is_a_provider_adapter_with_its_settings() -> None:
    adapter = SmtpAdapter("smtp.acme.test", sender="noreply@acme.test")

    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.name, adapter.timeout, adapter.capacity, adapter.port) == (
        "smtp",
        30.0,
        4,
        587,
    )
    assert SmtpAdapter("h", sender="a@b.test", security="ssl").port == 465


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"security": "tls"}, "security must be one of"),
        ({"port": 0}, "port must be 1-65535"),
        ({"username": "acme"}, "username and password go together"),
        (
            {"username": "acme", "password": "pw", "security": "none"},
            "will not send a password without TLS",
        ),
        ({"sender": "No Reply"}, "sender must contain an email address"),
        ({"message_id_domain": "acme.test>"}, "message_id_domain must be an ASCII domain"),
        ({"sender": "a@bücher.test"}, "message_id_domain must be an ASCII domain"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"capacity": 0}, "capacity must be an integer >= 1"),
        ({"name": " "}, "name must be a non-blank string"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"sender": "noreply@acme.test", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        SmtpAdapter("smtp.acme.test", **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stage", "code", "enhanced", "failure"),
    [
        ("rcpt", 421, None, Temporary),
        ("mail", 550, None, Permanent),
        ("mail", 553, "5.1.8", Permanent),
        ("data", 550, "5.1.7", Permanent),
        ("session", 535, "5.7.8", Permanent),
        ("rcpt", 551, None, Bounced),
        ("rcpt", 554, "5.1.10", Bounced),
        ("rcpt", -1, None, Temporary),
    ],
)
def test_classify_reply(stage: str, code: int, enhanced: str | None, failure: type) -> None:
    assert classify_reply(stage, code, enhanced) is failure  # type: ignore[arg-type]


def test_enhanced_status() -> None:
    assert enhanced_status("5.1.1 <x>: unknown") == "5.1.1"
    assert enhanced_status("Requested action not taken") is None
