"""The HTTP service over real sockets: uvicorn serving ``cw.asgi()`` on a free port, a real
SMTP server taking the email, and provider webhooks posted with httpx (design §12, §14)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from chimeway import (
    Chimeway,
    DeliveryReason,
    DeliveryStatus,
    SmtpAdapter,
    Triggered,
)
from chimeway.feedback import MailgunProvider
from chimeway.testing import RecordingAdapter, drain
from tests.adapters.conftest import SmtpServer
from tests.integration.conftest import Uvicorns, count
from tests.integration.webhook_support import PROVIDER, bounce_flow, receipt, signed

SIGNING_KEY = "key-7e55d003b4ba60aa8ed2ec2f33ad06bd"
MAILGUN = MailgunProvider(SIGNING_KEY)

Serve = Callable[[Chimeway], str]


@pytest.fixture
def serve(uvicorns: Uvicorns) -> Serve:
    """``serve(cw)`` runs uvicorn with ``cw.asgi()`` on a thread; its base URL."""
    return lambda cw: uvicorns.start(cw.asgi())


def mailgun_failure(message_id: str, event_id: str | None = None) -> bytes:
    """A Mailgun 'failed' (permanent) event about the message with this Message-ID."""
    timestamp, token = str(int(time.time())), uuid.uuid4().hex
    signature = hmac.new(
        SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": {
                "event": "failed",
                "id": event_id or uuid.uuid4().hex,
                "timestamp": time.time(),
                "severity": "permanent",
                "reason": "bounce",
                "delivery-status": {"code": 550, "description": "5.1.1 mailbox unknown"},
                "message": {"headers": {"message-id": message_id.strip("<>")}},
                "recipient": "ada@example.com",
            },
        }
    ).encode()


class SmsRecorder(RecordingAdapter):
    address = "phone"


@pytest.fixture
def app(make_cw: Callable[..., Chimeway], smtp_server: SmtpServer) -> Iterator[Chimeway]:
    smtp = SmtpAdapter(
        smtp_server.host, smtp_server.port, security="none", sender="App <noreply@app.test>"
    )
    cw = make_cw(
        adapters={"email": smtp, "sms": SmsRecorder()}, webhook_providers=[MAILGUN, PROVIDER]
    )
    yield cw
    smtp.close()


def test_a_bounce_posted_to_chimeway_serve_redirects_the_waiting_run(
    app: Chimeway, serve: Serve, smtp_server: SmtpServer, committed_db: str
) -> None:
    app.recipients.upsert("t", "ada", email="ada@example.com", phone="+14155550100")
    result = app.trigger(bounce_flow(app), {"users": ["ada"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    drain(app)
    [email_id] = result.delivery_ids
    [run_id] = result.run_ids
    [mail] = smtp_server.mailbox.received
    assert mail.rcpt_tos == ["ada@example.com"]
    assert app.delivery("t", email_id).status == DeliveryStatus.SUCCEEDED
    assert str(app.workflows.explain("t", run_id).state) == "waiting"

    base = serve(app)
    answer = httpx.post(
        f"{base}/v1/webhooks/mailgun", content=mailgun_failure(mail.message["Message-ID"])
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 1, "stored": 1, "duplicates": 0}
    drain(app)

    email = app.delivery("t", email_id)
    assert (email.status, email.suppression_reason) == (
        DeliveryStatus.CANCELLED,
        DeliveryReason.BOUNCED,
    )
    explained = app.workflows.explain("t", run_id)
    assert explained.current_step_name == "sms"
    reasons = [t.reason for t in app.workflows.list_traces("t", run_id)]
    assert "reactivated_on_feedback" in reasons
    sms = app.engine.adapters["sms"]
    assert isinstance(sms, RecordingAdapter) and len(sms.sent) == 1
    why = app.explain_delivery("t", email_id).why
    assert why.startswith("Not delivered: the provider reported a bounce (mailgun)")
    assert count(committed_db, "SELECT count(*) FROM chimeway_webhook_ingress") == 1


def test_a_forged_signature_gets_401_and_writes_nothing(
    app: Chimeway, serve: Serve, committed_db: str
) -> None:
    base = serve(app)
    body = mailgun_failure(f"<{uuid.uuid4()}@app.test>")
    forged = body.replace(b'"signature": "', b'"signature": "0')
    answer = httpx.post(f"{base}/v1/webhooks/mailgun", content=forged)
    assert answer.status_code == 401
    assert answer.json() == {"error": "signature.signature does not match"}
    body, headers = receipt("bounced", uuid.uuid4())
    tampered = httpx.post(
        f"{base}/v1/webhooks/receipts",
        content=body.replace(b"bounced", b"delivered"),
        headers=headers,
    )
    assert tampered.status_code == 401
    assert count(committed_db, "SELECT count(*) FROM chimeway_webhook_ingress") == 0
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 0


def test_the_same_event_twice_is_stored_once(
    app: Chimeway, serve: Serve, committed_db: str
) -> None:
    base = serve(app)
    body, headers = receipt("delivered", uuid.uuid4(), event_id="msg_once")
    first = httpx.post(f"{base}/v1/webhooks/receipts", content=body, headers=headers)
    second = httpx.post(f"{base}/v1/webhooks/receipts", content=body, headers=headers)
    assert first.json() == {"events": 1, "stored": 1, "duplicates": 0}
    assert second.status_code == 200
    assert second.json() == {"events": 1, "stored": 0, "duplicates": 1}
    assert count(committed_db, "SELECT count(*) FROM chimeway_webhook_ingress") == 1
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 1


@pytest.mark.parametrize(
    ("path", "content", "status", "error"),
    [
        (
            "/v1/webhooks/acme",
            b"{}",
            404,
            "no webhook provider 'acme' (registered: mailgun, receipts)",
        ),
        ("/v1/webhooks/mailgun", b"not json", 401, "the body carries no signature object"),
    ],
)
def test_refusals_name_the_problem(
    app: Chimeway, serve: Serve, path: str, content: bytes, status: int, error: str
) -> None:
    answer = httpx.post(serve(app) + path, content=content)
    assert (answer.status_code, answer.json()) == (status, {"error": error})


def test_an_unparseable_body_gets_400(app: Chimeway, serve: Serve, committed_db: str) -> None:
    body = b'{"type": 7}'
    headers = signed(body)
    answer = httpx.post(f"{serve(app)}/v1/webhooks/receipts", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json() == {"error": "type is missing or not a string"}
    assert count(committed_db, "SELECT count(*) FROM chimeway_webhook_ingress") == 0


def test_a_database_that_is_down_gets_503_so_the_provider_retries(serve: Serve) -> None:
    with Chimeway(
        "postgresql://nobody@127.0.0.1:1/none",
        webhook_providers=[PROVIDER],
        pool_min_size=0,
        pool_timeout=0.5,
    ) as down:
        base = serve(down)
        body, headers = receipt("delivered", uuid.uuid4())
        answer = httpx.post(f"{base}/v1/webhooks/receipts", content=body, headers=headers)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "30"
        assert httpx.get(f"{base}/healthz").status_code == 503
        forged = httpx.post(f"{base}/v1/webhooks/receipts", content=body, headers={})
        assert forged.status_code == 401  # refused before the database is needed


def test_healthz_and_metrics(app: Chimeway, serve: Serve) -> None:
    app.recipients.upsert("t", "ada", email="ada@example.com")
    result = app.trigger(
        bounce_flow(app), {"users": ["ada", "bob"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    drain(app)  # ada's email is sent; bob has no address: suppressed
    app.trigger(bounce_flow(app), {"users": ["ada"]}, tenant_id="t", idempotency_key="k2")
    base = serve(app)
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    scraped = httpx.get(f"{base}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'chimeway_deliveries{channel="email",status="succeeded"} 1.0' in text
    assert 'chimeway_deliveries{channel="email",status="suppressed"} 1.0' in text
    assert 'chimeway_delivery_attempts{error_class="",outcome="succeeded"} 1.0' in text
    assert 'chimeway_send_latency_seconds{channel="email",quantile="0.99"}' in text
    assert 'chimeway_send_latency_attempts{channel="email"} 1.0' in text
    assert 'chimeway_jobs{queue="chimeway_delivery",state="due"} 1.0' in text
    assert 'chimeway_oldest_due_job_seconds{queue="chimeway_delivery"}' in text
