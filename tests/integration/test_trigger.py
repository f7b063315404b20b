"""trigger(): rows and jobs in one transaction, idempotency, batching, errors that write nothing."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest

from chimeway import (
    Chimeway,
    Duplicate,
    InvalidContent,
    InvalidNotifier,
    InvalidTrigger,
    Notifier,
    OnOutcome,
    Recipient,
    Step,
    Triggered,
    Workflow,
)
from tests.integration.conftest import concurrently, count, counts
from tests.integration.notifiers import Welcome, WithWorkflow, in_app


def test_trigger_writes_event_notifications_deliveries_and_their_jobs(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    result = tx_cw.trigger(
        Welcome,
        {"users": ["u1", "u2"], "channels": ["in_app", "email"]},
        tenant_id="t1",
        idempotency_key="k1",
        correlation_id="req-9",
        conn=db,
    )
    assert isinstance(result, Triggered)
    assert len(result.notification_ids) == 2
    assert len(result.delivery_ids) == 4
    assert result.run_ids == []
    assert count(db, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'pending'") == 4
    jobs = db.execute(
        "SELECT task_name, queue_name, status, args FROM procrastinate_jobs"
    ).fetchall()
    # Planned together, the four deliveries share one job (delivery_batch_size 50).
    assert jobs == [
        (
            "chimeway:deliver_many",
            "chimeway_delivery",
            "todo",
            {"delivery_ids": [str(d) for d in result.delivery_ids]},
        )
    ]
    row = db.execute(
        "SELECT tenant_id, notification_key, notification_version, correlation_id, payload "
        "FROM chimeway_events"
    ).fetchone()
    assert row == (
        "t1",
        "welcome",
        1,
        "req-9",
        {"users": ["u1", "u2"], "channels": ["in_app", "email"]},
    )


def test_job_arguments_carry_ids_only(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    result = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered)
    args = [r[0] for r in db.execute("SELECT args FROM procrastinate_jobs")]
    assert args == [{"delivery_id": str(result.delivery_ids[0])}]


@pytest.mark.parametrize("app_wrote_first", [True, False])
def test_caller_rollback_leaves_no_rows_and_no_jobs(
    cw: Chimeway, committed_db: str, app_wrote_first: bool
) -> None:
    before = counts(committed_db)
    with psycopg.connect(committed_db) as conn:
        conn.execute("CREATE TABLE app_orders (id int)")
        conn.commit()
        if app_wrote_first:
            conn.execute("INSERT INTO app_orders VALUES (1)")
        result = cw.trigger(
            Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=conn
        )
        assert isinstance(result, Triggered)
        conn.rollback()
    assert counts(committed_db) == before
    assert count(committed_db, "SELECT count(*) FROM app_orders") == 0


def test_caller_commit_lands_rows_and_jobs_together(cw: Chimeway, committed_db: str) -> None:
    with psycopg.connect(committed_db) as conn:
        cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=conn)
        # Not visible to anyone else before the caller commits.
        assert counts(committed_db)["procrastinate_jobs"] == 0
        conn.commit()
    after = counts(committed_db)
    assert after["chimeway_deliveries"] == 1
    assert after["procrastinate_jobs"] == 1


def test_second_trigger_with_same_key_is_inert(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    first = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db)
    before = counts(db)
    second = tx_cw.trigger(
        Welcome, {"users": ["u1", "u2"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    assert isinstance(first, Triggered)
    assert second == Duplicate(first.event_id)
    assert counts(db) == before


def test_same_key_in_another_tenant_is_a_new_event(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    first = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t1", idempotency_key="k", conn=db)
    second = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t2", idempotency_key="k", conn=db)
    assert isinstance(first, Triggered)
    assert isinstance(second, Triggered)
    assert first.event_id != second.event_id


def test_ten_concurrent_triggers_with_one_key_give_one_triggered(
    cw: Chimeway, committed_db: str
) -> None:
    barrier = threading.Barrier(10)
    results: list[Any] = []
    lock = threading.Lock()

    def run() -> None:
        with psycopg.connect(committed_db) as conn:
            barrier.wait()
            res = cw.trigger(
                Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="same", conn=conn
            )
            conn.commit()
        with lock:
            results.append(res)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(isinstance(r, Triggered) for r in results) == 1
    duplicates = [r for r in results if isinstance(r, Duplicate)]
    assert len(duplicates) == 9
    assert len({d.event_id for d in duplicates}) == 1
    assert counts(committed_db)["procrastinate_jobs"] == 1


def test_recipients_are_deduplicated_by_id(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    result = tx_cw.trigger(
        Welcome, {"users": ["a", "b", "a"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    assert isinstance(result, Triggered)
    assert len(result.notification_ids) == 2


class CountingCursor(psycopg.Cursor[Any]):
    executed = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        type(self).executed += 1
        return super().execute(*args, **kwargs)


def test_many_recipients_are_written_in_batches_with_one_batch_defer(
    cw: Chimeway, committed_db: str
) -> None:
    users = [f"user-{i}" for i in range(2500)]
    CountingCursor.executed = 0
    with psycopg.connect(committed_db, cursor_factory=CountingCursor) as conn:
        result = cw.trigger(
            Welcome, {"users": users}, tenant_id="t", idempotency_key="k", conn=conn
        )
        conn.commit()
    assert isinstance(result, Triggered)
    assert len(result.delivery_ids) == 2500
    # savepoint handling + event + 3 notification batches + 3 delivery batches + 1 defer
    assert CountingCursor.executed <= 12
    assert counts(committed_db)["procrastinate_jobs"] == 2500 / 50  # delivery_batch_size


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant_id": "", "idempotency_key": "k"}, "tenant_id must be a non-blank string"),
        ({"tenant_id": "  ", "idempotency_key": "k"}, "tenant_id must be a non-blank string"),
        ({"tenant_id": None, "idempotency_key": "k"}, "tenant_id must be a non-blank string"),
        ({"tenant_id": "t", "idempotency_key": ""}, "idempotency_key must be a non-blank string"),
        ({"tenant_id": "t", "idempotency_key": 5}, "idempotency_key must be a non-blank string"),
    ],
)
def test_blank_tenant_or_key_is_invalid_and_writes_nothing(
    tx_cw: Chimeway, db: psycopg.Connection[Any], kwargs: dict[str, Any], message: str
) -> None:
    before = counts(db)
    with pytest.raises(InvalidTrigger, match=message):
        tx_cw.trigger(Welcome, {"users": ["u1"]}, **kwargs, conn=db)
    assert counts(db) == before


def test_params_that_are_not_json_are_invalid(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    before = counts(db)
    with pytest.raises(InvalidTrigger, match="JSON-serializable"):
        tx_cw.trigger(
            Welcome,
            {"users": ["u1"], "when": object()},
            tenant_id="t",
            idempotency_key="k",
            conn=db,
        )
    assert counts(db) == before


class BadContent(Welcome):
    key = "bad_content"

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        content = in_app()
        if recipient.id == "u2":
            del content["primary_action"]
        return content


def test_invalid_content_for_one_recipient_fails_the_trigger_and_writes_nothing(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    before = counts(db)
    with pytest.raises(InvalidContent, match=r"in_app.*primary_action"):
        tx_cw.trigger(
            BadContent, {"users": ["u1", "u2"]}, tenant_id="t", idempotency_key="k", conn=db
        )
    assert counts(db) == before


class NoKey(Notifier):
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return []

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {}


def test_invalid_notifier_names_what_is_wrong(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    before = counts(db)
    with pytest.raises(InvalidNotifier, match=r"NoKey.*key"):
        tx_cw.trigger(NoKey, {}, tenant_id="t", idempotency_key="k", conn=db)
    assert counts(db) == before


def test_trigger_by_registered_key(make_tx_cw: Any, db: psycopg.Connection[Any]) -> None:
    cw = make_tx_cw(notifiers=[Welcome])
    result = cw.trigger("welcome", {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered)


def test_a_new_workflow_rolled_back_with_the_callers_transaction_is_stored_again(
    cw: Chimeway, committed_db: str
) -> None:
    """Two triggers store a new definition in the caller's transaction, which then rolls
    back: the process must not remember the definition that never committed."""
    from chimeway import Step, Triggered, Workflow
    from tests.integration.notifiers import WithWorkflow

    fresh = WithWorkflow(Workflow(key="fresh", version=1, steps=[Step("a", channel="in_app")]))
    with psycopg.connect(committed_db) as conn:
        for key in ("a", "b"):
            cw.trigger(fresh, {"users": ["u1"]}, tenant_id="t", idempotency_key=key, conn=conn)
        conn.rollback()
    result = cw.trigger(fresh, {"users": ["u1"]}, tenant_id="t", idempotency_key="c")
    assert isinstance(result, Triggered) and len(result.run_ids) == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_workflow_definitions") == 1
    # Once committed, it is remembered: no new definition row, no lookup failure.
    again = cw.trigger(fresh, {"users": ["u2"]}, tenant_id="t", idempotency_key="d")
    assert isinstance(again, Triggered)
    assert len(cw.engine.catalog._definitions) == 1


# -- one delivery, one statement ------------------------------------------------------------

ROWS = {
    "notification": "SELECT n.recipient_type, n.category, n.assigns, n.contents"
    " FROM chimeway_notifications n WHERE n.recipient_id = %s",
    "run": "SELECT r.tenant_id, r.definition_id, r.current_step_id, r.state::text,"
    " r.status_reason, r.status_context, r.pending_signals FROM chimeway_workflow_runs r"
    " WHERE r.recipient_id = %s",
    "run history": "SELECT t.step_id, t.from_state::text, t.to_state::text, t.reason, t.context"
    " FROM chimeway_workflow_transitions t JOIN chimeway_workflow_runs r ON r.id = t.run_id"
    " WHERE r.recipient_id = %s ORDER BY t.id",
    "delivery": "SELECT d.tenant_id, d.channel, d.status::text, d.orchestration_state::text,"
    " d.render_data, d.max_attempts, d.workflow_step_id, d.workflow_run_id IS NOT NULL"
    " FROM chimeway_deliveries d WHERE d.recipient_id = %s",
    "delivery history": "SELECT t.from_status::text, t.to_status::text, t.reason, t.context"
    " FROM chimeway_delivery_transitions t JOIN chimeway_deliveries d ON d.id = t.delivery_id"
    " WHERE d.recipient_id = %s ORDER BY t.id",
    "job": "SELECT j.queue_name, j.task_name, j.priority, j.lock,"
    " j.queueing_lock = 'chimeway:deliver:' || d.id, j.args = jsonb_build_object("
    "'delivery_id', d.id::text), j.status::text, j.scheduled_at"
    " FROM procrastinate_jobs j JOIN chimeway_deliveries d"
    " ON j.args->>'delivery_id' = d.id::text WHERE d.recipient_id = %s",
}


def rows_of(db: psycopg.Connection[Any], recipient: str) -> dict[str, list[Any]]:
    return {name: db.execute(sql.encode(), [recipient]).fetchall() for name, sql in ROWS.items()}


@pytest.mark.parametrize("notifier", ["plain", "workflow"])
def test_a_one_delivery_trigger_writes_what_the_batches_write(
    make_tx_cw: Any, db: psycopg.Connection[Any], notifier: str
) -> None:
    """One recipient goes through the one-statement write; two through the batches (one
    job per delivery, as for one delivery, with a batch size of 1)."""
    cw = make_tx_cw(delivery_batch_size=1)
    target = (
        Welcome
        if notifier == "plain"
        else WithWorkflow(
            Workflow(
                key="one_or_more",
                version=1,
                steps=[
                    Step(
                        "notice",
                        channel="in_app",
                        progress=[OnOutcome(outcome="delivered", to_step="email")],
                    ),
                    Step("email", channel="email"),
                ],
            )
        )
    )

    def user(name: str) -> dict[str, list[Any]]:
        found = rows_of(db, name)
        # The content names the recipient; the rest must be the same.
        return json.loads(json.dumps(found, default=str).replace(name, "<user>"))

    one = cw.trigger(target, {"users": ["user-1"]}, tenant_id="t", idempotency_key="1", conn=db)
    two = cw.trigger(
        target, {"users": ["user-2", "user-3"]}, tenant_id="t", idempotency_key="2", conn=db
    )
    assert isinstance(one, Triggered) and isinstance(two, Triggered)
    assert len(one.delivery_ids) == 1 and len(one.run_ids) == (notifier == "workflow")
    assert all(user("user-1")[name] for name in ROWS if notifier == "workflow" or "run" not in name)
    assert user("user-1") == user("user-2")


def test_a_one_delivery_trigger_commits_on_its_own_and_leaves_the_pool_as_it_found_it(
    cw: Chimeway, committed_db: str
) -> None:
    result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    assert count(committed_db, "SELECT count(*) FROM procrastinate_jobs") == 1
    with cw.pool.connection() as conn:
        assert not conn.autocommit
    again = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert again == Duplicate(result.event_id)
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries") == 1


def test_concurrent_first_triggers_of_a_new_workflow_all_see_its_steps(make_cw: Any) -> None:
    """The one-statement path stores a new definition in a transaction of its own: triggers
    racing to store it wait for its steps instead of seeing a definition without them."""
    cw = make_cw(pool_max_size=12)
    target = WithWorkflow(
        Workflow(key="raced", version=1, steps=[Step("notice", channel="in_app")])
    )
    results = concurrently(
        10,
        lambda: cw.trigger(
            target,
            {"users": [f"u-{threading.get_ident()}"]},
            tenant_id="t",
            idempotency_key=f"k-{threading.get_ident()}",
        ),
    )
    assert all(isinstance(r, Triggered) and len(r.delivery_ids) == 1 for r in results)
