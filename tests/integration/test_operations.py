"""Operator actions and lookups: cw.cancel_run, cw.redrive_delivery, cw.find. Tenant-scoped,
explained in the trace and the delivery's timeline, through the guarded transition functions;
a cancel racing a progression step ends in one outcome (real concurrent connections)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import (
    Advanced,
    Chimeway,
    DeliveryReason,
    DeliveryStatus,
    InvalidArgument,
    InvalidTransition,
    Noop,
    NotFound,
    RunState,
    Triggered,
)
from chimeway.store import deliveries
from chimeway.testing import drain
from tests.acceptance.conftest import wait_until
from tests.integration.conftest import Recorders, concurrently, count
from tests.integration.notifiers import Welcome, WithWorkflow
from tests.integration.test_progression import WAIT_30M, run_deliveries

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
DELIVER_JOBS = (
    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:deliver' "
    "AND args->>'delivery_id' = %s AND status = 'todo'"
)


def start(cw: Chimeway, conn: Any = None, key: str = "k", tenant: str = "t") -> Triggered:
    result = cw.trigger(
        WithWorkflow(WAIT_30M), {"users": ["u1"]}, tenant_id=tenant, idempotency_key=key, conn=conn
    )
    assert isinstance(result, Triggered)
    return result


def give_up(conn: Any, delivery_id: uuid.UUID, reason: DeliveryReason) -> None:
    """Move a pending delivery to cancelled(reason) by hand, as a failed send would."""
    deliveries.transition(conn, delivery_id, DeliveryStatus.DISPATCHED, reason="test")
    deliveries.transition(
        conn, delivery_id, DeliveryStatus.CANCELLED, reason="test", suppression_reason=reason
    )


# -- cancel_run -----------------------------------------------------------------------------


def test_cancel_a_waiting_run_stops_it_and_says_who_in_the_trace(
    tx_cw: Chimeway, db: psycopg.Connection[Any], adapters: Recorders
) -> None:
    started = start(tx_cw, db)
    drain(tx_cw, conn=db)
    run_id = started.run_ids[0]
    assert tx_cw.workflows.explain("t", run_id, conn=db).state == RunState.WAITING

    result = tx_cw.cancel_run("t", run_id, "customer asked", cancelled_by="alice", conn=db)

    assert (result.cancelled, result.state, result.delivery_ids) == (True, "stopped", [])
    explained = tx_cw.workflows.explain("t", run_id, conn=db)
    assert (explained.state, explained.status_reason, explained.terminal_reason) == (
        "stopped",
        "cancelled",
        "cancelled",
    )
    assert explained.status_context == {"cancelled_by": "alice", "reason": "customer asked"}
    assert explained.suspended_until is None and explained.pending_signals == []
    last = tx_cw.workflows.list_traces("t", run_id, conn=db)[-1]
    assert (last.reason, last.from_state, last.to_state) == ("run_cancelled", "waiting", "stopped")
    assert last.context == {"cancelled_by": "alice", "reason": "customer asked"}
    # The wait's timer finds the run stopped: the email step never comes.
    assert tx_cw.progression.progress_run(run_id, now=LATER, conn=db) == Noop(
        run_id, "run_not_active"
    )
    drain(tx_cw, conn=db)
    assert adapters["email"].sent == []
    assert [status for _, status in run_deliveries(db, run_id)] == ["succeeded"]


def test_cancel_an_active_run_cancels_its_delivery_not_sent_yet(
    tx_cw: Chimeway, db: psycopg.Connection[Any], adapters: Recorders
) -> None:
    started = start(tx_cw, db)
    (delivery_id,) = started.delivery_ids

    result = tx_cw.cancel_run("t", started.run_ids[0], "wrong audience", conn=db)

    assert result.cancelled and result.delivery_ids == [delivery_id]
    found = tx_cw.delivery("t", delivery_id, conn=db)
    assert (found.status, found.suppression_reason) == ("cancelled", "manual")
    explained = tx_cw.explain_delivery("t", delivery_id, conn=db)
    assert "cancelled its run (wrong audience)" in explained.why
    moved = [e for e in explained.timeline if e.event == "delivery_cancelled"]
    assert moved[0].detail["reason"] == "wrong audience"
    drain(tx_cw, conn=db)  # its queued job finds it cancelled
    assert adapters["in_app"].sent == []


def test_cancel_a_finished_run_changes_nothing(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    run_id = start(tx_cw, db).run_ids[0]
    assert tx_cw.cancel_run("t", run_id, "first", conn=db).cancelled
    again = tx_cw.cancel_run("t", run_id, "second", cancelled_by="bob", conn=db)
    assert (again.cancelled, again.state, again.delivery_ids) == (False, "stopped", [])
    traces = tx_cw.workflows.list_traces("t", run_id, conn=db)
    assert [t.reason for t in traces].count("run_cancelled") == 1


def test_cancel_is_tenant_scoped_and_checks_its_arguments(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    run_id = start(tx_cw, db).run_ids[0]
    with pytest.raises(NotFound, match="not found"):
        tx_cw.cancel_run("other", run_id, "x", conn=db)
    with pytest.raises(NotFound, match="not found"):
        tx_cw.cancel_run("t", uuid.uuid4(), "x", conn=db)
    with pytest.raises(NotFound):
        tx_cw.cancel_run("t", "not-a-uuid", "x", conn=db)
    with pytest.raises(InvalidArgument, match="reason must be a non-blank string"):
        tx_cw.cancel_run("t", run_id, "  ", conn=db)
    assert tx_cw.workflows.explain("t", run_id, conn=db).state == RunState.ACTIVE


# -- redrive_delivery -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [DeliveryReason.RETRIES_EXHAUSTED, DeliveryReason.PERMANENT_FAILURE, DeliveryReason.ABANDONED],
)
def test_redrive_sends_a_delivery_its_provider_gave_up_on_once_more(
    tx_cw: Chimeway, db: psycopg.Connection[Any], adapters: Recorders, reason: DeliveryReason
) -> None:
    started = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(started, Triggered)
    (delivery_id,) = started.delivery_ids
    drain(tx_cw, conn=db)
    adapters["in_app"].sent.clear()
    with db.transaction():
        db.execute("UPDATE chimeway_deliveries SET status = 'pending' WHERE id = %s", [delivery_id])
        give_up(db, delivery_id, reason)

    result = tx_cw.redrive_delivery("t", delivery_id, redriven_by="carol", conn=db)

    assert (result.previous_status, result.previous_reason, result.status) == (
        "cancelled",
        reason,
        "pending",
    )
    assert count(db, DELIVER_JOBS, str(delivery_id)) == 1  # deferred in the same transaction
    explained = tx_cw.explain_delivery("t", delivery_id, conn=db)
    assert "carol (an operator) redrove it" in explained.why
    redriven = [e for e in explained.timeline if e.detail.get("reason") == "redriven"]
    assert redriven[0].detail["redriven_by"] == "carol"
    assert redriven[0].detail["previous_reason"] == reason
    drain(tx_cw, conn=db)
    assert len(adapters["in_app"].sent) == 1
    assert tx_cw.delivery("t", delivery_id, conn=db).status == DeliveryStatus.SUCCEEDED


def test_redrive_sends_a_failed_delivery_now_not_at_its_retry_time(
    tx_cw: Chimeway, db: psycopg.Connection[Any], adapters: Recorders
) -> None:
    started = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(started, Triggered)
    (delivery_id,) = started.delivery_ids
    db.execute("DELETE FROM procrastinate_jobs")  # its first job is lost; a retry is due later
    deliveries.transition(db, delivery_id, DeliveryStatus.DISPATCHED, reason="test")
    deliveries.transition(
        db, delivery_id, DeliveryStatus.FAILED, reason="test", retry_at=LATER + dt.timedelta(1)
    )

    result = tx_cw.redrive_delivery("t", delivery_id, conn=db)

    assert result.previous_status == DeliveryStatus.FAILED
    assert tx_cw.delivery("t", delivery_id, conn=db).retry_at is None
    drain(tx_cw, conn=db)
    assert len(adapters["in_app"].sent) == 1


@pytest.mark.parametrize("how", ["succeeded", "bounced", "pending", "manual"])
def test_redrive_refuses_what_must_not_be_sent_again(
    tx_cw: Chimeway, db: psycopg.Connection[Any], how: str
) -> None:
    started = start(tx_cw, db)
    (delivery_id,) = started.delivery_ids
    if how == "succeeded":
        drain(tx_cw, conn=db)
    elif how == "bounced":
        give_up(db, delivery_id, DeliveryReason.BOUNCED)
    elif how == "manual":
        tx_cw.cancel_run("t", started.run_ids[0], "stop", conn=db)
    before = tx_cw.delivery("t", delivery_id, conn=db)
    with pytest.raises(InvalidTransition, match="can be redriven"):
        tx_cw.redrive_delivery("t", delivery_id, conn=db)
    assert tx_cw.delivery("t", delivery_id, conn=db) == before


def test_redrive_is_tenant_scoped_and_all_or_nothing(cw: Chimeway) -> None:
    started = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(started, Triggered)
    (delivery_id,) = started.delivery_ids
    with cw.transaction() as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        give_up(conn, delivery_id, DeliveryReason.RETRIES_EXHAUSTED)
    with pytest.raises(NotFound, match="not found"):
        cw.redrive_delivery("other", delivery_id)
    with pytest.raises(RuntimeError), cw.transaction() as conn:  # the caller's tx rolls back
        cw.redrive_delivery("t", delivery_id, conn=conn)
        raise RuntimeError("the caller's transaction fails")
    assert cw.delivery("t", delivery_id).status == DeliveryStatus.CANCELLED
    assert count(cw.database_url, DELIVER_JOBS, str(delivery_id)) == 0


# -- find -------------------------------------------------------------------------------------


def test_find_by_recipient_idempotency_key_and_correlation_id(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    order = tx_cw.trigger(
        Welcome,
        {"users": ["u1", "u2"], "channels": ["in_app", "email"]},
        tenant_id="t",
        idempotency_key="order-42",
        correlation_id="req-7",
        conn=db,
    )
    other = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k2", conn=db)
    foreign = tx_cw.trigger(
        Welcome, {"users": ["u1"]}, tenant_id="t2", idempotency_key="order-42", conn=db
    )
    assert isinstance(order, Triggered) and isinstance(other, Triggered)
    assert isinstance(foreign, Triggered)

    by_key = tx_cw.find("t", idempotency_key="order-42", conn=db)
    assert {d.delivery_id for d in by_key} == set(order.delivery_ids)
    assert {(d.recipient_id, d.channel) for d in by_key} == {
        ("u1", "in_app"),
        ("u1", "email"),
        ("u2", "in_app"),
        ("u2", "email"),
    }
    assert all(d.event_id == order.event_id and d.correlation_id == "req-7" for d in by_key)
    assert {d.delivery_id for d in tx_cw.find("t", correlation_id="req-7", conn=db)} == set(
        order.delivery_ids
    )
    by_user = tx_cw.find("t", recipient="u1", conn=db)
    assert len(by_user) == 3 and {d.tenant_id for d in by_user} == {"t"}
    times = [d.created_at for d in by_user]
    assert times == sorted(times, reverse=True)  # newest first
    emails = tx_cw.find("t", recipient="u1", status="pending", limit=2, conn=db)
    assert len(emails) == 2 and all(d.status == "pending" for d in emails)
    assert len(tx_cw.find("t", conn=db)) == 5  # no key: the tenant's latest
    assert tx_cw.find("t", status="succeeded", conn=db) == []
    # Another tenant's rows never match: exactly as if they did not exist.
    assert tx_cw.find("t3", idempotency_key="order-42", conn=db) == []
    assert tx_cw.find("t3", recipient="u1", conn=db) == []
    assert tx_cw.find("t3", correlation_id="req-7", conn=db) == []
    assert [d.delivery_id for d in tx_cw.find("t2", recipient="u1", conn=db)] == list(
        foreign.delivery_ids
    )


def test_find_checks_its_arguments(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(InvalidArgument, match="not recipient and idempotency_key"):
        tx_cw.find("t", recipient="u1", idempotency_key="k", conn=db)
    with pytest.raises(InvalidArgument, match="unknown delivery status 'sent'"):
        tx_cw.find("t", status="sent", conn=db)
    with pytest.raises(InvalidArgument, match="limit must be an int from 1 to 1000"):
        tx_cw.find("t", limit=0, conn=db)
    with pytest.raises(InvalidArgument, match="recipient must be a non-blank string"):
        tx_cw.find("t", recipient=" ", conn=db)
    with pytest.raises(InvalidArgument, match="tenant_id"):
        tx_cw.find("", conn=db)


# -- a cancel racing a progression step -----------------------------------------------------


def waiting_run(cw: Chimeway, key: str) -> uuid.UUID:
    started = start(cw, key=key)
    drain(cw)
    run_id = started.run_ids[0]
    assert cw.workflows.explain("t", run_id).state == RunState.WAITING
    return run_id


def blocked_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def test_a_step_that_locks_first_is_followed_by_the_cancel(cw: Chimeway) -> None:
    run_id = waiting_run(cw, "k")
    with cw.transaction() as conn:  # the progression step holds the run's lock
        advanced = cw.progression.progress_run(run_id, now=LATER, conn=conn)
        assert isinstance(advanced, Advanced)
        thread, out = in_thread(lambda: cw.cancel_run("t", run_id, "race", cancelled_by="ops"))
        wait_until(lambda: blocked_on_a_lock(cw.database_url))
    thread.join(timeout=30)
    (cancelled,) = out
    email = cw.workflows.run_deliveries("t", run_id)
    assert cancelled.cancelled and cancelled.delivery_ids == [email[-1]]
    assert run_deliveries(cw.database_url, run_id) == [
        ("notice", "succeeded"),
        ("email", "cancelled"),
    ]
    drain(cw)
    assert cw.workflows.explain("t", run_id).state == RunState.STOPPED


def test_a_cancel_that_locks_first_leaves_the_step_nothing_to_do(cw: Chimeway) -> None:
    run_id = waiting_run(cw, "k")
    with cw.transaction() as conn:  # the cancel holds the run's lock
        assert cw.cancel_run("t", run_id, "race", conn=conn).cancelled
        thread, out = in_thread(lambda: cw.progression.progress_run(run_id, now=LATER))
        wait_until(lambda: blocked_on_a_lock(cw.database_url))
    thread.join(timeout=30)
    assert out == [Noop(run_id, "run_not_active")]
    assert run_deliveries(cw.database_url, run_id) == [("notice", "succeeded")]


def test_cancels_racing_steps_end_in_one_outcome_each(cw: Chimeway, adapters: Recorders) -> None:
    run_ids = [waiting_run(cw, f"k{n}") for n in range(6)]
    adapters["email"].sent.clear()
    for run_id in run_ids:
        calls = iter(
            [
                lambda r=run_id: cw.progression.progress_run(r, now=LATER),
                lambda r=run_id: cw.cancel_run("t", r, "race"),
            ]
        )
        lock = threading.Lock()

        def one(calls: Any = calls, lock: threading.Lock = lock) -> Any:
            with lock:
                call = next(calls)
            return call()

        results = concurrently(2, one)
        (cancel,) = [r for r in results if not isinstance(r, Advanced | Noop)]
        (step,) = [r for r in results if isinstance(r, Advanced | Noop)]
        assert cancel.cancelled and cancel.state == RunState.STOPPED
        statuses = run_deliveries(cw.database_url, run_id)
        if isinstance(step, Advanced):  # the step first: its delivery was cancelled
            assert statuses == [("notice", "succeeded"), ("email", "cancelled")]
            assert len(cancel.delivery_ids) == 1
        else:  # the cancel first: the step found the run stopped
            assert step == Noop(run_id, "run_not_active")
            assert statuses == [("notice", "succeeded")]
        reasons = [t.reason for t in cw.workflows.list_traces("t", run_id)]
        assert reasons.count("run_cancelled") == 1 and reasons[-1] == "run_cancelled"
    drain(cw)
    assert adapters["email"].sent == []
