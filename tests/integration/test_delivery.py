"""The deliver job, the delivery state machine, retries and explain_delivery."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import (
    AttemptOutcome,
    Bounced,
    Chimeway,
    DeliveryStatus,
    ErrorClass,
    InvalidTransition,
    NotFound,
    Permanent,
    RetryPolicy,
    Sent,
    Temporary,
    Triggered,
)
from chimeway.redaction import REDACTED
from chimeway.store import deliveries
from chimeway.testing import drain
from chimeway.types import DeliveryReason
from tests.integration.conftest import IMMEDIATE, Recorders, concurrently
from tests.integration.notifiers import Welcome


def one_delivery(
    cw: Chimeway, tenant: str = "t", key: str = "k", conn: psycopg.Connection[Any] | None = None
) -> uuid.UUID:
    result = cw.trigger(
        Welcome, {"users": ["u1"]}, tenant_id=tenant, idempotency_key=key, conn=conn
    )
    assert isinstance(result, Triggered)
    return result.delivery_ids[0]


def attempt_numbers(where: str | psycopg.Connection[Any], delivery_id: uuid.UUID) -> list[int]:
    """The delivery's attempt numbers, read through a connection (inside its transaction)
    or on a database URL."""
    query = (
        "SELECT attempt_number FROM chimeway_delivery_attempts WHERE delivery_id = %s "
        "ORDER BY attempt_number"
    )
    if isinstance(where, psycopg.Connection):
        return [r[0] for r in where.execute(query, [delivery_id])]
    with psycopg.connect(where) as conn:
        return [r[0] for r in conn.execute(query, [delivery_id])]


def test_drain_sends_through_the_adapter_and_succeeds(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    delivery = tx_cw.delivery("t", delivery_id, conn=db)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.provider_message_id == f"recorded-{delivery_id}"
    [request] = adapters["in_app"].sent
    assert request.idempotency_key == str(delivery_id)
    assert request.content["headline"] == "Welcome u1"
    assert attempt_numbers(db, delivery_id) == [1]


def test_temporary_failures_retry_until_success(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    adapters["in_app"].then(*[Temporary("timeout")] * 4)
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    assert tx_cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.SUCCEEDED
    assert attempt_numbers(db, delivery_id) == [1, 2, 3, 4, 5]
    assert len(adapters["in_app"].requests) == 5


def test_five_temporary_failures_exhaust_retries(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    adapters["in_app"].then(*[Temporary("timeout")] * 5)
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    delivery = tx_cw.delivery("t", delivery_id, conn=db)
    assert delivery.status == DeliveryStatus.CANCELLED
    assert delivery.suppression_reason == DeliveryReason.RETRIES_EXHAUSTED
    assert attempt_numbers(db, delivery_id) == [1, 2, 3, 4, 5]
    history = [(t.from_status, t.to_status) for t in deliveries.transitions(db, delivery_id)]
    assert history[-2:] == [("dispatched", "failed"), ("failed", "cancelled")]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Permanent("invalid address"), DeliveryReason.PERMANENT_FAILURE),
        (Bounced("mailbox full"), DeliveryReason.BOUNCED),
    ],
)
def test_permanent_and_bounced_end_on_attempt_one(
    tx_cw: Chimeway,
    adapters: Recorders,
    db: psycopg.Connection[Any],
    failure: Exception,
    reason: str,
) -> None:
    adapters["in_app"].then(failure)
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    delivery = tx_cw.delivery("t", delivery_id, conn=db)
    assert (delivery.status, delivery.suppression_reason) == (DeliveryStatus.CANCELLED, reason)
    assert attempt_numbers(db, delivery_id) == [1]


def test_unexpected_adapter_exception_is_a_recorded_temporary_failure(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    adapters["in_app"].then(ZeroDivisionError("boom"))
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    assert tx_cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.SUCCEEDED
    first = db.execute(
        "SELECT outcome, error_class, error FROM chimeway_delivery_attempts "
        "WHERE delivery_id = %s AND attempt_number = 1",
        [delivery_id],
    ).fetchone()
    assert first == ("failed", "unknown", "ZeroDivisionError: boom")


def test_retry_is_scheduled_with_backoff(
    make_cw: Any, adapters: Recorders, committed_db: str
) -> None:
    cw = make_cw(default_retry=RetryPolicy(base_delay=dt.timedelta(minutes=1), jitter=0))
    adapters["in_app"].then(Temporary("rate limited"))
    delivery_id = one_delivery(cw)
    drain(cw)
    delivery = cw.delivery("t", delivery_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.retry_at is not None
    with psycopg.connect(committed_db) as conn:
        scheduled, wait = conn.execute(
            "SELECT scheduled_at, scheduled_at - now() FROM procrastinate_jobs "
            "WHERE status = 'todo'"
        ).fetchone()
    assert scheduled == delivery.retry_at
    assert 50 <= wait.total_seconds() <= 60
    # Running the job again early sends nothing.
    assert cw.deliver(delivery_id).action == "skipped"
    assert len(adapters["in_app"].requests) == 1


def test_max_attempts_is_configurable_per_channel(
    make_tx_cw: Any, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    cw = make_tx_cw(retry={"in_app": RetryPolicy(max_attempts=2, base_delay=IMMEDIATE.base_delay)})
    adapters["in_app"].then(Temporary("x"), Temporary("y"))
    delivery_id = one_delivery(cw, conn=db)
    drain(cw, conn=db)
    delivery = cw.delivery("t", delivery_id, conn=db)
    assert delivery.suppression_reason == DeliveryReason.RETRIES_EXHAUSTED
    assert attempt_numbers(db, delivery_id) == [1, 2]


def test_provider_responses_are_stored_redacted(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    adapters["in_app"].then(
        Sent("m-1", meta={"status": 202, "api_key": "k", "nested": {"Auth-Token": "t", "ok": 1}})
    )
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    [response] = db.execute(
        "SELECT provider_response FROM chimeway_delivery_attempts WHERE delivery_id = %s",
        [delivery_id],
    ).fetchone()
    assert response == {
        "status": 202,
        "api_key": REDACTED,
        "nested": {"Auth-Token": REDACTED, "ok": 1},
    }


def test_job_run_twice_never_sends_twice(cw: Chimeway, adapters: Recorders) -> None:
    delivery_id = one_delivery(cw)
    assert cw.deliver(delivery_id).action == "succeeded"
    assert cw.deliver(delivery_id).action == "skipped"
    assert len(adapters["in_app"].requests) == 1


def test_ten_concurrent_jobs_on_a_cancelled_delivery_make_no_attempt(
    make_cw: Any, committed_db: str
) -> None:
    cw = make_cw(pool_max_size=12)
    delivery_id = one_delivery(cw)
    with cw.transaction() as conn:
        deliveries.transition(
            conn,
            delivery_id,
            DeliveryStatus.CANCELLED,
            reason="manual",
            suppression_reason=DeliveryReason.MANUAL,
        )
    results = concurrently(10, lambda: cw.deliver(delivery_id).action)
    assert results == ["skipped"] * 10
    assert attempt_numbers(committed_db, delivery_id) == []


def test_ten_concurrent_jobs_on_a_pending_delivery_send_once(
    make_cw: Any, adapters: Recorders, committed_db: str
) -> None:
    cw = make_cw(pool_max_size=12)
    delivery_id = one_delivery(cw)
    results = concurrently(10, lambda: cw.deliver(delivery_id).action)
    assert sorted(results) == ["skipped"] * 9 + ["succeeded"]
    assert len(adapters["in_app"].requests) == 1
    assert attempt_numbers(committed_db, delivery_id) == [1]


def test_attempt_numbers_stay_contiguous_under_concurrent_records(
    cw: Chimeway, committed_db: str
) -> None:
    delivery_id = one_delivery(cw)

    def append() -> int:
        with cw.transaction() as conn:
            deliveries.lock_many(conn, [delivery_id])
            new = deliveries.NewAttempt(
                delivery_id,
                AttemptOutcome.FAILED,
                dt.datetime.now(dt.UTC),
                error_class=ErrorClass.TEMPORARY,
            )
            return deliveries.append_attempts(conn, [new])[0].attempt_number

    numbers = concurrently(8, append)
    assert sorted(numbers) == list(range(1, 9))
    assert attempt_numbers(committed_db, delivery_id) == list(range(1, 9))


def test_illegal_move_raises_invalid_transition(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    delivery_id = one_delivery(tx_cw, conn=db)
    with (
        pytest.raises(InvalidTransition, match="cannot move from pending to succeeded"),
        tx_cw.transaction(db) as conn,  # a savepoint, rolled back by the error
    ):
        deliveries.transition(conn, delivery_id, DeliveryStatus.SUCCEEDED, reason="x")
    assert tx_cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.PENDING


def test_allowed_table_matches_design() -> None:
    allowed = {(a.value, b.value) for a, targets in deliveries.ALLOWED.items() for b in targets}
    assert allowed == {
        ("pending", "dispatched"),
        ("pending", "suppressed"),
        ("pending", "cancelled"),
        ("dispatched", "dispatched"),
        ("dispatched", "succeeded"),
        ("dispatched", "failed"),
        ("dispatched", "cancelled"),
        ("failed", "dispatched"),
        ("failed", "cancelled"),
        # Policy at the claim of a retry (design §13): an opt-out made after the first
        # attempt, or a lowered cap, stops the retries.
        ("failed", "suppressed"),
        # Provider feedback after the send (design §5, §12): a late bounce or failure.
        ("succeeded", "cancelled"),
        ("succeeded", "failed"),
        # An operator's redrive (cw.redrive_delivery): now, or once more.
        ("failed", "pending"),
        ("cancelled", "pending"),
    }


# -- explain_delivery ---------------------------------------------------------------------


def events(explanation: Any) -> list[str]:
    return [entry.event for entry in explanation.timeline]


def test_explain_succeeded_delivery(cw: Chimeway) -> None:
    # Committed: the timeline is in time order, and inside one transaction every entry
    # would carry the same now().
    delivery_id = one_delivery(cw)
    drain(cw)
    explained = cw.explain_delivery("t", delivery_id)
    assert explained.sent
    assert explained.why.startswith("Sent: the in_app adapter accepted it on attempt 1")
    assert events(explained) == [
        "event_created",
        "notification_created",
        "delivery_planned",
        "delivery_dispatched",
        "attempt_recorded",
        "delivery_succeeded",
    ]


def test_explain_retried_then_exhausted_delivery(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    adapters["in_app"].then(*[Temporary("503 from provider")] * 5)
    delivery_id = one_delivery(tx_cw, conn=db)
    drain(tx_cw, conn=db)
    explained = tx_cw.explain_delivery("t", delivery_id, conn=db)
    assert not explained.sent
    assert explained.why == (
        "Not sent: all 5 attempts failed temporarily; the last error was: 503 from provider."
    )
    assert events(explained).count("attempt_recorded") == 5
    assert events(explained)[-2:] == ["delivery_failed", "delivery_cancelled"]


def test_explain_retried_delivery_awaiting_its_next_attempt(
    make_tx_cw: Any, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    cw = make_tx_cw(default_retry=RetryPolicy(base_delay=dt.timedelta(minutes=5), jitter=0))
    adapters["in_app"].then(Temporary("timeout"))
    delivery_id = one_delivery(cw, conn=db)
    drain(cw, conn=db)
    why = cw.explain_delivery("t", delivery_id, conn=db).why
    assert why.startswith("Not sent yet: attempt 1 of 5 failed temporarily: timeout; the next")


def test_explain_suppressed_delivery(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    delivery_id = one_delivery(tx_cw, conn=db)
    with tx_cw.transaction(db) as conn:
        deliveries.transition(
            conn,
            delivery_id,
            DeliveryStatus.SUPPRESSED,
            reason="channel disabled by user",
            suppression_reason=DeliveryReason.CHANNEL_DISABLED,
        )
    explained = tx_cw.explain_delivery("t", delivery_id, conn=db)
    assert explained.why == "Not sent: suppressed (channel_disabled) before any attempt."
    assert events(explained)[-1] == "delivery_suppressed"
    assert explained.timeline[-1].detail["reason"] == "channel disabled by user"


def test_explain_pending_delivery(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    delivery_id = one_delivery(tx_cw, conn=db)
    assert tx_cw.explain_delivery("t", delivery_id, conn=db).why == (
        "Not sent yet: its delivery job is waiting for a worker."
    )


def test_explain_hides_other_tenants_deliveries(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    delivery_id = one_delivery(tx_cw, tenant="t1", conn=db)
    with pytest.raises(NotFound) as other:
        tx_cw.explain_delivery("t2", delivery_id, conn=db)
    with pytest.raises(NotFound) as missing:
        tx_cw.explain_delivery("t2", uuid.uuid4(), conn=db)
    assert str(other.value).replace(str(delivery_id), "ID") == str(missing.value).replace(
        str(missing.value).split()[1], "ID"
    )


# -- the claim: which rows may be sent now, on the database's clock --------------------------

PAST, FUTURE = "now() - interval '1 hour'", "now() + interval '1 hour'"


@pytest.mark.parametrize(
    ("status", "ready", "retry_at", "changed_at", "action", "why"),
    [
        ("pending", True, None, "now()", "succeeded", ""),
        ("pending", False, None, "now()", "skipped", "not ready (deferred)"),
        ("failed", True, PAST, "now()", "succeeded", ""),
        ("failed", True, FUTURE, "now()", "skipped", "retry not due yet"),
        ("dispatched", True, None, PAST, "succeeded", ""),  # its worker went silent
        ("dispatched", True, None, "now()", "skipped", "being sent by another process"),
        ("succeeded", True, None, "now()", "skipped", "terminal (succeeded)"),
        ("cancelled", True, None, "now()", "skipped", "terminal (cancelled)"),
    ],
)
def test_claim_sends_only_what_is_due_and_requeues_what_comes_later(
    cw: Chimeway,
    adapters: Recorders,
    committed_db: str,
    status: str,
    ready: bool,
    retry_at: str | None,
    changed_at: str,
    action: str,
    why: str,
) -> None:
    delivery_id = one_delivery(cw)
    with psycopg.connect(committed_db) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute(
            "UPDATE chimeway_deliveries SET status = %s, orchestration_state = %s,"
            f" retry_at = {retry_at or 'NULL'}, status_changed_at = {changed_at}"
            " WHERE id = %s",
            [status, "ready" if ready else "deferred", delivery_id],
        )
    result = cw.deliver(delivery_id)
    assert (result.action, result.detail) == (action, why)
    assert len(adapters["in_app"].sent) == (1 if action == "succeeded" else 0)
    with psycopg.connect(committed_db) as conn:
        history = conn.execute(
            "SELECT from_status::text, reason FROM chimeway_delivery_transitions"
            " WHERE delivery_id = %s AND to_status = 'dispatched'",
            [delivery_id],
        ).fetchall()
        requeued = conn.execute(
            "SELECT scheduled_at > now() FROM procrastinate_jobs WHERE queueing_lock = %s",
            [f"chimeway:deliver:{delivery_id}"],
        ).fetchall()
    if action == "succeeded":
        reason = "redispatched_after_interruption" if status == "dispatched" else "dispatched"
        assert history == [(status, reason)]
    else:
        assert history == []
    # A send that is not due yet leaves a job for when it is; nothing else is queued.
    assert requeued == (
        [(True,)] if why in ("retry not due yet", "being sent by another process") else []
    )


def test_claim_of_a_missing_delivery_is_none(cw: Chimeway) -> None:
    with cw.transaction() as conn:
        assert deliveries.claim_many(conn, [uuid.uuid4()], dt.timedelta(minutes=5)) == {}
    assert cw.deliver(uuid.uuid4()).detail == "missing"
