"""Provider feedback through ``cw.webhooks`` (design §12), in a rolled-back transaction:
ingress rows and their jobs, duplicates, late bounces and failures with their history, runs
decided again, signals and opt-outs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from chimeway import (
    Chimeway,
    DeliveryReason,
    DeliveryStatus,
    NotFound,
    OnOutcome,
    OnSignal,
    Step,
    Triggered,
    WaitUntil,
    WebhookUnauthorized,
    WebhookUnparseable,
    Workflow,
)
from chimeway.store import deliveries
from chimeway.testing import drain
from tests.integration.conftest import count
from tests.integration.notifiers import Welcome, WithWorkflow
from tests.integration.webhook_support import PROVIDER, bounce_flow, receipt, signed

Conn = psycopg.Connection[Any]


@pytest.fixture
def cw(make_tx_cw: Callable[..., Chimeway]) -> Chimeway:
    return make_tx_cw(webhook_providers=[PROVIDER])


def sent_email(cw: Chimeway, db: Conn, channels: tuple[str, ...] = ("email",)) -> uuid.UUID:
    result = cw.trigger(
        Welcome,
        {"users": ["ada"], "channels": list(channels)},
        tenant_id="t",
        idempotency_key="k",
        conn=db,
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=db)
    return result.delivery_ids[0]


def ingress(db: Conn) -> list[tuple[str, str | None, str | None]]:
    rows = db.execute(
        "SELECT kind::text, ingress_state::text, outcome FROM chimeway_webhook_ingress"
        " ORDER BY created_at, kind"
    ).fetchall()
    return [tuple(row) for row in rows]


def test_a_webhook_becomes_an_ingress_row_and_a_job(cw: Chimeway, db: Conn) -> None:
    delivery_id = sent_email(cw, db)
    body, headers = receipt("delivered", delivery_id)
    result = cw.webhooks.process("receipts", body, headers, conn=db)
    assert (result.provider, result.events, result.duplicates) == ("receipts", 1, 0)
    [ingress_id] = result.ingress_ids
    jobs = db.execute(
        "SELECT args FROM procrastinate_jobs WHERE task_name = 'chimeway:process_webhook'"
    ).fetchall()
    assert jobs == [({"ingress_id": str(ingress_id)},)]
    assert ingress(db) == [("delivered", "queued", None)]
    drain(cw, conn=db)
    assert ingress(db) == [("delivered", "processed", "confirmed")]
    assert cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.SUCCEEDED
    explained = cw.explain_delivery("t", delivery_id, conn=db)
    [feedback] = [e for e in explained.timeline if e.event == "feedback_received"]
    assert feedback.detail["kind"] == "delivered"
    assert feedback.detail["outcome"] == "confirmed"


def test_the_same_event_twice_is_inert(cw: Chimeway, db: Conn) -> None:
    delivery_id = sent_email(cw, db)
    body, headers = receipt("bounced", delivery_id, event_id="msg_same")
    first = cw.webhooks.process("receipts", body, headers, conn=db)
    second = cw.webhooks.process("receipts", body, headers, conn=db)
    assert (len(first.ingress_ids), second.ingress_ids, second.duplicates) == (1, [], 1)
    drain(cw, conn=db)
    again = cw.webhooks.process_ingress(first.ingress_ids[0], conn=db)
    assert (again.outcome, again.detail) == ("cancelled_bounced", "already processed")
    assert count(db, "SELECT count(*) FROM chimeway_webhook_ingress") == 1
    moves = [
        t.detail["reason"]
        for t in cw.explain_delivery("t", delivery_id, conn=db).timeline
        if t.event == "delivery_cancelled"
    ]
    assert moves == ["bounced"]


@pytest.mark.parametrize(
    ("body", "forged", "error"),
    [(b"{}", True, WebhookUnauthorized), (b"not json", False, WebhookUnparseable)],
)
def test_unauthorised_or_unparseable_requests_write_nothing(
    cw: Chimeway, db: Conn, body: bytes, forged: bool, error: type[Exception]
) -> None:
    # Signed when the test runs, not when it is collected: the signature's timestamp must
    # be within the tolerance however long the suite took to get here.
    headers = (
        {"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AA=="}
        if forged
        else signed(body)
    )
    with pytest.raises(error):
        cw.webhooks.process("receipts", body, headers, conn=db)
    assert count(db, "SELECT count(*) FROM chimeway_webhook_ingress") == 0
    assert count(db, "SELECT count(*) FROM procrastinate_jobs") == 0


def test_an_unknown_provider_is_not_found(cw: Chimeway, db: Conn) -> None:
    with pytest.raises(NotFound, match="no webhook provider 'acme' \\(registered: receipts\\)"):
        cw.webhooks.process("acme", b"{}", {}, conn=db)


def test_a_late_bounce_cancels_a_succeeded_delivery_with_its_history(
    cw: Chimeway, db: Conn
) -> None:
    delivery_id = sent_email(cw, db)
    body, headers = receipt("bounced", delivery_id, code="mailbox_unknown")
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    delivery = cw.delivery("t", delivery_id, conn=db)
    assert (delivery.status, delivery.suppression_reason) == (
        DeliveryStatus.CANCELLED,
        DeliveryReason.BOUNCED,
    )
    explained = cw.explain_delivery("t", delivery_id, conn=db)
    [move] = [e for e in explained.timeline if e.event == "delivery_cancelled"]
    assert move.detail["from"] == "succeeded"
    assert move.detail["provider"] == "receipts"
    assert move.detail["evidence"] == {"type": "message.bounced", "code": "mailbox_unknown"}
    assert explained.why.startswith("Not delivered: the provider reported a bounce")


def test_a_late_temporary_failure_is_retried(cw: Chimeway, db: Conn) -> None:
    delivery_id = sent_email(cw, db)
    body, headers = receipt("failed", delivery_id, permanent=False)
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)  # the feedback, then the retry it scheduled (no delay in tests)
    delivery = cw.delivery("t", delivery_id, conn=db)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    attempts = cw.explain_delivery("t", delivery_id, conn=db).attempts
    assert [a.attempt_number for a in attempts] == [1, 2]
    moves = [(str(m.from_status), str(m.to_status), m.reason) for m in _history(db, delivery_id)]
    assert ("succeeded", "failed", "provider_feedback") in moves


def test_a_late_permanent_failure_cancels(cw: Chimeway, db: Conn) -> None:
    delivery_id = sent_email(cw, db)
    body, headers = receipt("failed", delivery_id, permanent=True)
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    delivery = cw.delivery("t", delivery_id, conn=db)
    assert delivery.suppression_reason == DeliveryReason.PERMANENT_FAILURE


def _history(db: Conn, delivery_id: uuid.UUID) -> list[Any]:
    return deliveries.transitions(db, delivery_id)


def test_feedback_found_by_provider_message_id(cw: Chimeway, db: Conn) -> None:
    delivery_id = sent_email(cw, db)
    message_id = cw.delivery("t", delivery_id, conn=db).provider_message_id
    assert message_id
    body, headers = receipt("bounced", message_id=message_id)
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    assert cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.CANCELLED


def test_feedback_about_an_unknown_delivery_is_ignored(cw: Chimeway, db: Conn) -> None:
    body, headers = receipt("bounced", uuid.uuid4())
    cw.webhooks.process("receipts", body, headers, conn=db)
    other, other_headers = receipt("delivered", message_id="nobody-knows")
    cw.webhooks.process("receipts", other, other_headers, conn=db)
    drain(cw, conn=db)
    reasons = db.execute(
        "SELECT ingress_state::text, ignored_reason FROM chimeway_webhook_ingress ORDER BY 2"
    ).fetchall()
    assert reasons == [
        ("ignored", "delivery_not_found"),
        ("ignored", "provider_message_id_not_found"),
    ]


def test_a_bounce_redirects_a_run_waiting_after_its_step(cw: Chimeway, db: Conn) -> None:
    notifier = bounce_flow(cw)
    result = cw.trigger(notifier, {"users": ["ada"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered)
    drain(cw, conn=db)
    [run_id] = result.run_ids
    assert str(cw.workflows.explain("t", run_id, conn=db).state) == "waiting"
    body, headers = receipt("bounced", result.delivery_ids[0])
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    explained = cw.workflows.explain("t", run_id, conn=db)
    assert explained.current_step_name == "sms"
    reasons = [t.reason for t in cw.workflows.list_traces("t", run_id, conn=db)]
    assert reasons[-4:] == [
        "reactivated_on_feedback",
        "progressed_on_delivery_outcome",
        "step_activated",
        "workflow_completed",
    ]
    [trace] = [
        t
        for t in cw.workflows.list_traces("t", run_id, conn=db)
        if t.reason == "progressed_on_delivery_outcome"
    ]
    assert trace.context["workflow_outcome"] == "bounced"


def test_a_delivered_confirmation_keeps_the_run_waiting(cw: Chimeway, db: Conn) -> None:
    notifier = bounce_flow(cw)
    result = cw.trigger(notifier, {"users": ["ada"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered)
    drain(cw, conn=db)
    before = cw.workflows.explain("t", result.run_ids[0], conn=db)
    body, headers = receipt("delivered", result.delivery_ids[0])
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    assert cw.workflows.explain("t", result.run_ids[0], conn=db) == before


def test_after_the_run_moved_on_feedback_is_recorded_only(
    make_tx_cw: Callable[..., Chimeway], db: Conn
) -> None:
    cw = make_tx_cw(webhook_providers=[PROVIDER])
    flow = Workflow(
        key="moved_on",
        version=1,
        steps=[
            Step(
                "email",
                channel="email",
                progress=[OnOutcome(outcome="delivered", to_step="sms")],
            ),
            Step("sms", channel="sms"),
        ],
    )
    result = cw.trigger(
        WithWorkflow(flow), {"users": ["ada"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=db)
    before = cw.workflows.list_traces("t", result.run_ids[0], conn=db)
    assert before[-1].reason == "workflow_completed"
    body, headers = receipt("bounced", result.delivery_ids[0])
    cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    assert cw.workflows.list_traces("t", result.run_ids[0], conn=db) == before
    email = cw.delivery("t", result.delivery_ids[0], conn=db)
    assert email.suppression_reason == DeliveryReason.BOUNCED


def test_opened_and_clicked_become_signals_that_end_a_wait(
    make_tx_cw: Callable[..., Chimeway], db: Conn
) -> None:
    cw = make_tx_cw(webhook_providers=[PROVIDER])
    flow = Workflow(
        key="opened_or_sms",
        version=1,
        steps=[
            Step(
                "email",
                channel="email",
                progress=[
                    WaitUntil(
                        delay=3600, to_step="sms", cancel_signals=["chimeway.notification.opened"]
                    ),
                    OnSignal(event="chimeway.notification.clicked", to_step="sms"),
                ],
            ),
            Step("sms", channel="sms"),
        ],
    )
    result = cw.trigger(
        WithWorkflow(flow), {"users": ["ada", "bob"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=db)
    ada_email, bob_email = result.delivery_ids
    for kind, delivery_id in (("opened", ada_email), ("clicked", bob_email)):
        body, headers = receipt(kind, delivery_id)
        cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    ada, bob = (cw.workflows.explain("t", r, conn=db) for r in result.run_ids)
    assert (str(ada.state), ada.terminal_reason) == ("completed", "wait_cancelled_by_signal")
    assert bob.current_step_name == "sms"
    signals = db.execute(
        "SELECT actor_id, event_name, payload->>'delivery_id' FROM chimeway_signals ORDER BY 1"
    ).fetchall()
    assert signals == [
        ("ada", "chimeway.notification.opened", str(ada_email)),
        ("bob", "chimeway.notification.clicked", str(bob_email)),
    ]


def test_complaints_and_unsubscribes_turn_the_channel_off(cw: Chimeway, db: Conn) -> None:
    delivery_id = sent_email(cw, db)
    for kind in ("complained", "unsubscribed"):
        body, headers = receipt(kind, delivery_id)
        cw.webhooks.process("receipts", body, headers, conn=db)
    drain(cw, conn=db)
    rows = db.execute(
        "SELECT tenant_id, recipient_id, channel, category, workflow, enabled, source"
        " FROM chimeway_preferences"
    ).fetchall()
    assert rows == [("t", "ada", "email", "account", None, False, "unsubscribed:receipts")]
    assert ingress(db) == [
        ("complained", "processed", "opted_out"),
        ("unsubscribed", "processed", "opted_out"),
    ]
    assert cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.SUCCEEDED


def test_concurrent_webhooks_share_commits_and_stay_exactly_once(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    cw = make_cw(webhook_providers=[PROVIDER])
    bodies = [receipt("delivered", uuid.uuid4(), event_id=f"msg_{i}") for i in range(40)]
    twice = bodies + bodies  # every event posted twice, concurrently

    results = concurrently_map(8, lambda pair: cw.webhooks.process("receipts", *pair), twice)
    assert sum(len(r.ingress_ids) for r in results) == 40
    assert sum(r.duplicates for r in results) == 40
    assert count(committed_db, "SELECT count(*) FROM chimeway_webhook_ingress") == 40
    jobs = count(
        committed_db,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:process_webhook'",
    )
    assert jobs == 40


def concurrently_map(threads: int, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))
