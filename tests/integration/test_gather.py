"""A ``deliver`` job takes along the one-delivery jobs queued behind it (a backlog of
one-recipient triggers is sent in chunks, like a fan-out) and chains all its runs' next
steps: each delivery still sent once, nothing lost when its claim fails."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from chimeway import RunState
from chimeway.engine import deliver
from tests.integration.test_batches import ByRecipient, jobs_for, start, step_deliveries


@pytest.fixture
def gathering(make_cw: Any, committed_db: str) -> Any:
    def build(**settings: Any) -> tuple[Any, ByRecipient]:
        adapter = ByRecipient()
        cw = make_cw(adapters={"in_app": adapter, "email": adapter}, **settings)
        return cw, adapter

    return build


def notices(url: str, users: list[str]) -> dict[str, uuid.UUID]:
    found = step_deliveries(url, "notice")
    return {user: found[user][0] for user in users}


def fetch(url: str, delivery_id: uuid.UUID) -> None:
    """What a worker does with the job it runs, late: takes it out of the todo ones, a
    second after its delivery was planned (its job queued behind others)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'delivery_id' = %s",
            [str(delivery_id)],
        )
        conn.execute(
            "UPDATE chimeway_deliveries SET created_at = created_at - interval '1 second' "
            "WHERE id = %s",
            [delivery_id],
        )


def status(url: str, delivery_id: uuid.UUID) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status::text FROM chimeway_deliveries WHERE id = %s", [delivery_id]
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_deliver_job_takes_the_queued_ones_along_and_chains_their_next_steps(
    gathering: Any, committed_db: str
) -> None:
    cw, adapter = gathering()
    users = [f"sent-{n}" for n in range(1, 6)] + ["alsosent-later", "alsosent-locked"]
    for user in users:
        start(cw, [user], key=user)
    sent = notices(committed_db, users)
    with psycopg.connect(committed_db) as conn:  # two jobs a worker would not take now
        conn.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 hour' "
            "WHERE args->>'delivery_id' = %s",
            [str(sent["alsosent-later"])],
        )
        conn.execute(
            "UPDATE procrastinate_jobs SET lock = 'theirs' WHERE args->>'delivery_id' = %s",
            [str(sent["alsosent-locked"])],
        )

    fetch(committed_db, sent["sent-1"])
    result = deliver.deliver(cw.engine, sent["sent-1"], chain=True)

    assert result.action == "succeeded"
    emails = step_deliveries(committed_db, "email")
    for n in range(1, 6):
        user = f"sent-{n}"
        assert status(committed_db, sent[user]) == "succeeded"
        # taken along (the job running is the worker's to finish)
        assert jobs_for(committed_db, sent[user]) == ([("doing", True)] if n == 1 else [])
        email = emails[user][0]
        assert status(committed_db, email) == "succeeded"  # chained, no job of its own
        assert jobs_for(committed_db, email) == []
        assert cw.workflows.explain("t", emails[user][1]).state == RunState.COMPLETED
    for user in ("alsosent-later", "alsosent-locked"):
        assert status(committed_db, sent[user]) == "pending"
        assert len(jobs_for(committed_db, sent[user])) == 1
    assert set(adapter.calls.values()) == {1}
    assert len(adapter.calls) == 10


def test_a_job_takes_at_most_a_chunk_along(gathering: Any, committed_db: str) -> None:
    cw, _adapter = gathering(delivery_batch_size=3)
    users = [f"sent-{n}" for n in range(1, 6)]
    for user in users:
        start(cw, [user], key=user)
    sent = notices(committed_db, users)
    fetch(committed_db, sent["sent-1"])
    deliver.deliver(cw.engine, sent["sent-1"], chain=True)
    done = [u for u in users if status(committed_db, sent[u]) == "succeeded"]
    assert len(done) == 3  # its own and the two queued first
    assert done == ["sent-1", "sent-2", "sent-3"]
    assert all(len(jobs_for(committed_db, sent[u])) == 1 for u in ("sent-4", "sent-5"))


def test_one_job_per_delivery_takes_nothing_along(gathering: Any, committed_db: str) -> None:
    cw, _adapter = gathering(delivery_batch_size=1)
    users = ["sent-1", "sent-2"]
    for user in users:
        start(cw, [user], key=user)
    sent = notices(committed_db, users)
    deliver.deliver(cw.engine, sent["sent-1"], chain=True)
    assert status(committed_db, sent["sent-2"]) == "pending"
    assert jobs_for(committed_db, sent["sent-2"]) == [("todo", True)]


def test_a_fresh_deliverys_job_takes_nothing_along(gathering: Any, committed_db: str) -> None:
    cw, _adapter = gathering()
    users = ["sent-1", "sent-2"]
    for user in users:
        start(cw, [user], key=user)
    sent = notices(committed_db, users)
    with psycopg.connect(committed_db) as conn:  # planned "just now", whatever this machine's speed
        conn.execute(
            "UPDATE chimeway_deliveries SET created_at = now() + interval '1 minute' WHERE id = %s",
            [sent["sent-1"]],
        )
    deliver.deliver(cw.engine, sent["sent-1"], chain=True)  # no backlog: it started at once
    assert status(committed_db, sent["sent-2"]) == "pending"
    assert jobs_for(committed_db, sent["sent-2"]) == [("todo", True)]


def test_a_claim_of_the_taken_that_fails_puts_their_jobs_back(
    gathering: Any, committed_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    cw, adapter = gathering()
    users = ["sent-1", "sent-2", "sent-3"]
    for user in users:
        start(cw, [user], key=user)
    sent = notices(committed_db, users)
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.recipient_id = 'sent-3' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON chimeway_deliveries "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    fetch(committed_db, sent["sent-1"])
    # The job sends its own delivery; taking the others along failed and is undone.
    assert deliver.deliver(cw.engine, sent["sent-1"], chain=True).action == "succeeded"
    assert "taking queued deliveries along failed" in caplog.text
    for user in ("sent-2", "sent-3"):
        assert status(committed_db, sent[user]) == "pending"
        assert jobs_for(committed_db, sent[user]) == [("todo", True)]  # back in the queue
    assert list(adapter.calls.values()) == [1, 1]  # sent-1 and its email
    assert cw.engine.liveness._held == set()  # nothing left held
    with psycopg.connect(committed_db) as conn:
        conn.execute("DROP TRIGGER refuse ON chimeway_deliveries")
    fetch(committed_db, sent["sent-2"])
    deliver.deliver(cw.engine, sent["sent-2"], chain=True)
    assert all(status(committed_db, sent[u]) == "succeeded" for u in users)
    assert set(adapter.calls.values()) == {1}


def test_a_queued_spare_job_of_a_delivery_another_call_holds_is_not_sent_twice(
    gathering: Any, committed_db: str
) -> None:
    cw, adapter = gathering()
    users = ["sent-1", "sent-2"]
    for user in users:
        start(cw, [user], key=user)
    sent = notices(committed_db, users)
    other_call, _busy = cw.engine.liveness.hold([sent["sent-2"]])  # about to claim it
    fetch(committed_db, sent["sent-1"])
    deliver.deliver(cw.engine, sent["sent-1"], chain=True)
    assert status(committed_db, sent["sent-2"]) == "pending"  # left to the call holding it
    assert adapter.calls[sent["sent-2"]] == 0
    cw.engine.liveness.let_go(other_call)
    assert cw.deliver(sent["sent-2"]).action == "succeeded"  # that call sends it, once
    assert adapter.calls[sent["sent-2"]] == 1
