"""testing.drain(tenant_id=..., event_ids=...): only the jobs about that tenant's or those
events' rows run; everything else stays queued, on committed rows and in a transaction."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from chimeway import Chimeway, InvalidArgument, RunState, Step, Triggered, WaitUntil, Workflow
from chimeway.testing import drain
from tests.integration.conftest import Recorders, count
from tests.integration.notifiers import Welcome, WithWorkflow

READ = "chimeway.notification.read"
UNTIL_READ = Workflow(
    key="until_read",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[WaitUntil(delay=3600, to_step="email", cancel_signals=[READ])],
        ),
        Step("email", channel="email"),
    ],
)

QUEUED = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"


def trigger(cw: Chimeway, tenant: str, key: str, users: list[str], conn: Any = None) -> Triggered:
    result = cw.trigger(Welcome, {"users": users}, tenant_id=tenant, idempotency_key=key, conn=conn)
    assert isinstance(result, Triggered)
    return result


def sent_to(adapters: Recorders) -> list[str]:
    return sorted(request.recipient_id for request in adapters["in_app"].sent)


def test_drain_by_tenant_then_by_event_on_committed_rows(cw: Chimeway, adapters: Recorders) -> None:
    trigger(cw, "a", "k1", ["a1"])
    trigger(cw, "a", "k2", ["a2", "a3"])
    other = trigger(cw, "b", "k1", ["b1", "b2"])
    third = trigger(cw, "b", "k3", ["b3"])

    drain(cw, tenant_id="a")
    assert sent_to(adapters) == ["a1", "a2", "a3"]
    assert count(cw.database_url, QUEUED) == 2  # tenant b's jobs wait

    drain(cw, event_ids=[other.event_id])
    assert sent_to(adapters) == ["a1", "a2", "a3", "b1", "b2"]
    assert cw.delivery("b", third.delivery_ids[0]).status == "pending"

    drain(cw, tenant_id="a", event_ids=[str(third.event_id)])  # b's event, tenant a: nothing
    assert count(cw.database_url, QUEUED) == 1
    drain(cw)
    assert sent_to(adapters) == ["a1", "a2", "a3", "b1", "b2", "b3"]


def test_a_chunk_partly_in_scope_sends_its_part_and_stays_queued(
    make_cw: Any, adapters: Recorders
) -> None:
    cw = make_cw(delivery_batch_size=10)
    mine = trigger(cw, "a", "k", ["a1"])
    theirs = trigger(cw, "b", "k", ["b1"])
    both = [*mine.delivery_ids, *theirs.delivery_ids]
    with cw.transaction() as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        cw.engine.deferrer.deliver(conn, both)  # one deliver_many job for both tenants
    assert count(cw.database_url, QUEUED) == 1

    drain(cw, tenant_id="a")

    assert sent_to(adapters) == ["a1"]
    assert cw.delivery("b", theirs.delivery_ids[0]).status == "pending"
    assert count(cw.database_url, QUEUED) == 1
    drain(cw)  # the job runs whole; the delivery already sent is not sent again
    assert sent_to(adapters) == ["a1", "b1"]


def test_drain_in_a_transaction_is_scoped_too(
    tx_cw: Chimeway, db: psycopg.Connection[Any], adapters: Recorders
) -> None:
    mine = trigger(tx_cw, "a", "k", ["a1"], conn=db)
    trigger(tx_cw, "b", "k", ["b1"], conn=db)
    drain(tx_cw, conn=db, event_ids=[mine.event_id])
    assert sent_to(adapters) == ["a1"]
    assert count(db, QUEUED) == 1
    drain(tx_cw, conn=db, tenant_id="b")
    assert sent_to(adapters) == ["a1", "b1"]
    assert count(db, QUEUED) == 0


def test_a_bad_event_id_is_refused(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    for conn in (None, db):  # refused before any job is looked at, in either mode
        with pytest.raises(InvalidArgument, match="event_ids must be event ids"):
            drain(tx_cw, event_ids=["nope"], conn=conn)


def test_signals_are_routed_for_their_tenant_only(cw: Chimeway) -> None:
    runs = {}
    for tenant in ("a", "b"):
        started = cw.trigger(
            WithWorkflow(UNTIL_READ), {"users": ["u1"]}, tenant_id=tenant, idempotency_key="k"
        )
        assert isinstance(started, Triggered)
        runs[tenant] = started
    drain(cw)
    for tenant in ("a", "b"):
        cw.track_signal(tenant, "u1", READ)

    drain(cw, event_ids=[runs["a"].event_id])  # tenant a's signal routes; b's waits

    assert cw.workflows.explain("a", runs["a"].run_ids[0]).state == RunState.COMPLETED
    assert cw.workflows.explain("b", runs["b"].run_ids[0]).state == RunState.WAITING
    drain(cw, tenant_id="b")
    assert cw.workflows.explain("b", runs["b"].run_ids[0]).state == RunState.COMPLETED
