"""Batching (digests, design §15): a workflow that starts with a Batch collects a recipient's
notifications into one run and sends one delivery for all of them."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import (
    Advanced,
    Batch,
    Chimeway,
    Daily,
    InvalidNotifier,
    InvalidTrigger,
    Noop,
    NotFound,
    Notifier,
    Recipient,
    Step,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.engine import planning
from chimeway.engine.progression import progress_timer
from chimeway.testing import drain, due_jobs
from tests.integration.conftest import Recorders, concurrently, count

WINDOW = dt.timedelta(minutes=10)


class CommentDigest(Notifier):
    key = "comment_digest"
    version = 1
    category = "comments"
    window: Any = WINDOW
    max_items: int | None = None

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["to"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"author": params["by"], "text": params["text"]}

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow:
        return Workflow(
            key="comment_digest",
            version=1,
            steps=[
                Batch(window=self.window, key="post_id", max_items=self.max_items),
                Step("email", channel="email"),
            ],
        )

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return email("1 new comment", [params["text"]])

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        return email(f"{len(items)} new comments", [i["text"] for i in items])


def email(subject: str, texts: list[str]) -> dict[str, Any]:
    return {
        "subject": subject,
        "text_body": "\n".join(texts),
        "html_body": "".join(f"<p>{t}</p>" for t in texts),
    }


class CappedDigest(CommentDigest):
    max_items = 5


def comment(
    cw: Chimeway,
    n: int,
    *,
    to: str = "ana",
    post: str = "p1",
    tenant: str = "t1",
    notifier: type[Notifier] = CommentDigest,
    conn: Any = None,
) -> Triggered:
    result = cw.trigger(
        notifier,
        {"to": to, "by": f"u{n}", "text": f"comment {n}", "post_id": post},
        tenant_id=tenant,
        idempotency_key=f"{tenant}-{post}-{to}-{n}",
        conn=conn,
    )
    assert isinstance(result, Triggered)
    return result


def rows(conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(sql.encode(), params or None).fetchall()


def test_concurrent_triggers_join_one_batch_and_send_one_delivery(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    numbers = iter(range(50))
    take = threading.Lock()

    def one() -> Triggered:
        with take:
            n = next(numbers)
        return comment(cw, n)

    results = concurrently(50, one)
    assert len({r.run_ids[0] for r in results}) == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_workflow_runs") == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_digests") == 1
    assert count(committed_db, "SELECT member_count FROM chimeway_digests") == 50
    assert count(committed_db, "SELECT count(*) FROM chimeway_digest_members") == 50
    with psycopg.connect(committed_db) as conn:
        positions = [
            r[0] for r in rows(conn, "SELECT position FROM chimeway_digest_members ORDER BY 1")
        ]
    assert positions == list(range(1, 51))
    drain(cw)  # nothing is due before the window ends
    assert adapters["email"].sent == []
    run_id = results[0].run_ids[0]
    # The run's one timer is queued at the window's end.
    with psycopg.connect(committed_db) as conn:
        assert rows(
            conn,
            "SELECT j.scheduled_at = d.closes_at FROM procrastinate_jobs j, chimeway_digests d "
            "WHERE j.task_name = 'chimeway:progress'",
        ) == [(True,)]
    result = cw.progression.progress_run(run_id, now=dt.datetime.now(dt.UTC) + WINDOW)
    assert type(result).__name__ == "Advanced"
    drain(cw)
    [sent] = adapters["email"].sent
    assert sent.content["subject"] == "50 new comments"
    assert sorted(sent.content["text_body"].split("\n")) == sorted(
        f"comment {n}" for n in range(50)
    )
    with psycopg.connect(committed_db) as conn:
        statuses = dict(
            rows(conn, "SELECT status::text, count(*) FROM chimeway_deliveries GROUP BY 1")
        )
    assert statuses == {"succeeded": 1, "digested": 49}


class ShortDigest(CommentDigest):
    window = 2  # seconds


def test_the_timer_at_the_windows_end_sends_the_digest(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    numbers = iter(range(10))
    take = threading.Lock()

    def one() -> Triggered:
        with take:
            n = next(numbers)
        return comment(cw, n, notifier=ShortDigest)

    [run_id] = {r.run_ids[0] for r in concurrently(10, one)}
    assert due_jobs(cw) == 0
    deadline = time.monotonic() + 30
    while due_jobs(cw) == 0:  # the database's clock reaches the window's end
        assert time.monotonic() < deadline, "the batch's timer never fell due"
        time.sleep(0.05)
    drain(cw)
    [sent] = adapters["email"].sent
    assert sent.content["subject"] == "10 new comments"
    assert cw.workflows.explain("t1", run_id).state == "completed"
    with psycopg.connect(committed_db) as conn:
        [(closes_at, closed_at, reason)] = rows(
            conn, "SELECT closes_at, closed_at, close_reason FROM chimeway_digests"
        )
    assert reason == "window_elapsed" and closed_at >= closes_at


# -- in a rolled-back transaction -----------------------------------------------------------


def later(db: Any, delta: dt.timedelta = WINDOW) -> dt.datetime:
    """The transaction's clock plus ``delta`` (a window's end, for ``progress_run(now=)``)."""
    now: dt.datetime = db.execute(b"SELECT now()").fetchone()[0]
    return now + delta


def statuses(db: Any) -> dict[str, int]:
    return dict(rows(db, "SELECT status::text, count(*) FROM chimeway_deliveries GROUP BY 1"))


def test_max_items_closes_the_batch_early_and_the_next_trigger_opens_another(
    tx_cw: Chimeway, db: Any, adapters: Recorders
) -> None:
    first = [comment(tx_cw, n, notifier=CappedDigest, conn=db) for n in range(5)]
    [run_id] = {r.run_ids[0] for r in first}
    assert rows(db, "SELECT state::text, close_reason, member_count FROM chimeway_digests") == [
        ("closed", "max_items", 5)
    ]
    # The join that filled it queued the run's timer now: draining sends the digest before
    # the window's end.
    drain(tx_cw, conn=db)
    [sent] = adapters["email"].sent
    assert sent.content["subject"] == "5 new comments"
    assert statuses(db) == {"succeeded": 1, "digested": 4}
    sixth = comment(tx_cw, 5, notifier=CappedDigest, conn=db)
    assert sixth.run_ids != [run_id]
    assert sorted(rows(db, "SELECT state::text, member_count FROM chimeway_digests")) == [
        ("closed", 5),
        ("open", 1),
    ]
    assert count(db, "SELECT count(*) FROM chimeway_workflow_runs") == 2


def test_a_trigger_after_the_close_starts_a_new_batch(
    tx_cw: Chimeway, db: Any, adapters: Recorders
) -> None:
    a, b = comment(tx_cw, 1, conn=db), comment(tx_cw, 2, conn=db)
    assert a.run_ids == b.run_ids
    # Not due yet: the timer that fires early does nothing.
    assert tx_cw.progression.progress_run(a.run_ids[0], conn=db) == Noop(
        a.run_ids[0], "wait_not_due"
    )
    result = tx_cw.progression.progress_run(a.run_ids[0], now=later(db), conn=db)
    assert isinstance(result, Advanced) and result.to_step == "email"
    # Closing again is a no-op: no second digest.
    again = tx_cw.progression.progress_run(a.run_ids[0], now=later(db), conn=db)
    assert again == Noop(a.run_ids[0], "prior_delivery_not_converged")
    assert (
        count(db, "SELECT count(*) FROM chimeway_deliveries WHERE workflow_run_id IS NOT NULL") == 1
    )
    drain(tx_cw, conn=db)
    assert [r.content["subject"] for r in adapters["email"].sent] == ["2 new comments"]
    assert rows(db, "SELECT state::text, close_reason FROM chimeway_digests") == [
        ("closed", "window_elapsed")
    ]
    c = comment(tx_cw, 3, conn=db)
    assert c.run_ids != a.run_ids
    assert sorted(rows(db, "SELECT state::text, member_count FROM chimeway_digests")) == [
        ("closed", 2),
        ("open", 1),
    ]
    # A batch key per post: another post's comment opens its own batch.
    d = comment(tx_cw, 4, post="p2", conn=db)
    assert d.run_ids not in (a.run_ids, c.run_ids)
    assert count(db, "SELECT count(*) FROM chimeway_digests WHERE state = 'open'") == 2


def test_batch_keys_are_per_tenant(tx_cw: Chimeway, db: Any, adapters: Recorders) -> None:
    one = [comment(tx_cw, n, tenant="t1", conn=db) for n in range(3)]
    two = [comment(tx_cw, n, tenant="t2", conn=db) for n in range(2)]
    assert len({r.run_ids[0] for r in one}) == 1
    assert len({r.run_ids[0] for r in two}) == 1
    assert one[0].run_ids != two[0].run_ids
    assert sorted(rows(db, "SELECT tenant_id, member_count FROM chimeway_digests")) == [
        ("t1", 3),
        ("t2", 2),
    ]
    # Closing t1's batch leaves t2's open.
    tx_cw.progression.progress_run(one[0].run_ids[0], now=later(db), conn=db)
    drain(tx_cw, conn=db)
    assert [r.content["subject"] for r in adapters["email"].sent] == ["3 new comments"]
    assert rows(db, "SELECT state::text FROM chimeway_digests WHERE tenant_id = 't2'") == [
        ("open",)
    ]
    # A member's delivery is another tenant's NotFound.
    member = one[1].delivery_ids[0]
    with pytest.raises(NotFound):
        tx_cw.explain_delivery("t2", member, conn=db)


def test_explained_both_ways(tx_cw: Chimeway, db: Any) -> None:
    triggered = [comment(tx_cw, n, conn=db) for n in range(3)]
    held = tx_cw.explain_delivery("t1", triggered[2].delivery_ids[0], conn=db)
    assert held.status == "pending"
    assert held.digest is not None and held.digest.role == "member"
    assert held.digest.position == 3
    assert held.why.startswith("Not sent yet: held as item 3 of a batch that closes at ")
    run = tx_cw.workflows.explain("t1", triggered[0].run_ids[0], conn=db)
    assert (run.state, run.status_reason) == ("waiting", "batch_open")
    assert run.suspended_until is not None
    tx_cw.progression.progress_run(triggered[0].run_ids[0], now=later(db), conn=db)
    drain(tx_cw, conn=db)
    member = tx_cw.explain_delivery("t1", triggered[1].delivery_ids[0], conn=db)
    assert member.status == "digested"
    assert member.digest is not None and member.digest.delivery_id is not None
    assert member.why.startswith(
        f"Not sent on its own: folded, as item 2 of 3, into the digest delivery "
        f"{member.digest.delivery_id} (sent); the batch closed at "
    )
    assert member.why.endswith("(its window ended).")
    digest = tx_cw.explain_delivery("t1", member.digest.delivery_id, conn=db)
    assert digest.status == "succeeded"
    assert digest.digest is not None and digest.digest.role == "digest"
    assert digest.why.startswith("The digest of 3 notifications, closed at ")
    assert digest.digest.notification_ids == [t.notification_ids[0] for t in triggered]
    assert member.digest.notification_ids == digest.digest.notification_ids
    traces = tx_cw.workflows.list_traces("t1", triggered[0].run_ids[0], conn=db)
    assert [t.reason for t in traces] == [
        "workflow_started",
        "step_activated",
        "batch_open",
        "batch_closed",
        "step_activated",
        "workflow_completed",
    ]
    assert traces[3].context["close_reason"] == "window_elapsed"
    assert traces[3].context["members"] == 3


def test_an_opted_out_channel_suppresses_the_digest(
    tx_cw: Chimeway, db: Any, adapters: Recorders
) -> None:
    tx_cw.preferences.set("t1", "ana", enabled=False, channel="email", conn=db)
    triggered = [comment(tx_cw, n, conn=db) for n in range(2)]
    tx_cw.progression.progress_run(triggered[0].run_ids[0], now=later(db), conn=db)
    drain(tx_cw, conn=db)
    assert adapters["email"].sent == []
    assert statuses(db) == {"suppressed": 1, "digested": 1}
    assert rows(db, "SELECT state::text, terminal_reason FROM chimeway_workflow_runs") == [
        ("completed", "implicit_completion")
    ]


class EscalatedDigest(CommentDigest):
    key = "escalated_digest"

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow:
        return Workflow(
            key="escalated_digest",
            version=1,
            steps=[
                Batch(window=WINDOW, key="post_id"),
                Step(
                    "notice",
                    channel="in_app",
                    progress=[
                        WaitUntil(
                            delay=dt.timedelta(hours=1),
                            to_step="email",
                            cancel_signals=["chimeway.notification.read"],
                        )
                    ],
                ),
                Step("email", channel="email"),
            ],
        )

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        if channel == "in_app":
            return inbox("1 new comment")
        return super().render(params, recipient, channel)

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        if channel == "in_app":
            return inbox(f"{len(items)} new comments")
        return super().render_batch(items, recipient, channel)


def inbox(headline: str) -> dict[str, Any]:
    return {
        "headline": headline,
        "body": headline,
        "primary_action": {"label": "Open", "url": "https://example.test/p1"},
    }


def test_a_read_signal_cancels_the_digests_escalation(
    tx_cw: Chimeway, db: Any, adapters: Recorders
) -> None:
    triggered = [comment(tx_cw, n, notifier=EscalatedDigest, conn=db) for n in range(3)]
    run_id = triggered[0].run_ids[0]
    # A run still collecting its batch listens for no signal.
    collecting = tx_cw.workflows.explain("t1", run_id, conn=db)
    assert (collecting.status_reason, collecting.pending_signals) == ("batch_open", [])
    tx_cw.progression.progress_run(run_id, now=later(db), conn=db)
    drain(tx_cw, conn=db)
    assert [r.content["headline"] for r in adapters["in_app"].sent] == ["3 new comments"]
    assert tx_cw.workflows.explain("t1", run_id, conn=db).state == "waiting"
    tx_cw.track_signal("t1", "ana", "chimeway.notification.read", conn=db, route="now")
    run = tx_cw.workflows.explain("t1", run_id, conn=db)
    assert (run.state, run.terminal_reason) == ("completed", "wait_cancelled_by_signal")
    drain(tx_cw, conn=db)
    assert adapters["email"].sent == []


class DailyDigest(CommentDigest):
    key = "daily_digest"

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["to"], timezone="America/New_York")]

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow:
        return Workflow(
            key="daily_digest",
            version=1,
            steps=[Batch(window=Daily(9, 0), key="post_id"), Step("email", channel="email")],
        )


def test_a_daily_window_closes_at_the_recipients_local_time(tx_cw: Chimeway, db: Any) -> None:
    triggered = comment(tx_cw, 1, notifier=DailyDigest, conn=db)
    [(opened_at, closes_at)] = rows(db, "SELECT opened_at, closes_at FROM chimeway_digests")
    batch = Batch(window=Daily(9, 0), key="post_id")
    assert closes_at == batch.closes_at(opened_at, "America/New_York")
    local = closes_at.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 0)
    assert dt.timedelta(0) < closes_at - opened_at <= dt.timedelta(hours=25)
    run = tx_cw.workflows.explain("t1", triggered.run_ids[0], conn=db)
    assert run.suspended_until == closes_at


def test_bad_declarations_write_nothing(tx_cw: Chimeway, db: Any) -> None:
    class NoRenderBatch(CommentDigest):
        key = "no_render_batch"
        render_batch = Notifier.render_batch  # type: ignore[assignment]

    with pytest.raises(InvalidNotifier, match="render_batch\\(\\) must be overridden"):
        comment(tx_cw, 1, notifier=NoRenderBatch, conn=db)
    with pytest.raises(InvalidTrigger, match="Batch key 'post_id'"):
        tx_cw.trigger(
            CommentDigest,
            {"to": "ana", "by": "u", "text": "t"},
            tenant_id="t1",
            idempotency_key="k",
            conn=db,
        )
    assert count(db, "SELECT count(*) FROM chimeway_events") == 0
    assert count(db, "SELECT count(*) FROM chimeway_digests") == 0


def test_the_digest_is_what_the_inbox_shows_and_what_later_steps_send(
    tx_cw: Chimeway, db: Any, adapters: Recorders
) -> None:
    triggered = [comment(tx_cw, n, notifier=EscalatedDigest, conn=db) for n in range(3)]
    run_id = triggered[0].run_ids[0]
    tx_cw.progression.progress_run(run_id, now=later(db), conn=db)
    drain(tx_cw, conn=db)
    [item] = tx_cw.inbox.list("t1", "ana", conn=db).items
    assert item.id == triggered[0].notification_ids[0]
    assert item.content["headline"] == "3 new comments"
    # Nobody read it: the escalation's email is the digest too.
    result = tx_cw.progression.progress_run(run_id, now=later(db, dt.timedelta(hours=2)), conn=db)
    assert isinstance(result, Advanced) and result.to_step == "email"
    drain(tx_cw, conn=db)
    [sent] = adapters["email"].sent
    assert sent.content["subject"] == "3 new comments"
    # The members' own notifications are not in the inbox: they were folded into the digest.
    assert len(tx_cw.inbox.list("t1", "ana", conn=db).items) == 1


class Carrier(Notifier):
    """Plain notifications for recipients ``params["to"]``: rows for members to point to."""

    key = "carrier"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=r) for r in params["to"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"text": "carrier"}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return ["chat"]


def test_daily_batches_opened_before_a_dst_change_close_at_local_time_after_it(
    tx_cw: Chimeway, db: Any
) -> None:
    """Batches opened (on planning's ``now=``) the day before New York's clocks go forward,
    and back, close at 09:00 local time the next day: 23 and 25 hours later. The zone comes
    from the recipient directory; without one, UTC."""
    tx_cw.recipients.upsert("t1", "ny", timezone="America/New_York", conn=db)
    carriers = tx_cw.trigger(
        Carrier, {"to": ["ny", "utc"]}, tenant_id="t1", idempotency_key="c1", conn=db
    )
    autumn_carrier = tx_cw.trigger(
        Carrier, {"to": ["ny"]}, tenant_id="t1", idempotency_key="c2", conn=db
    )
    assert isinstance(carriers, Triggered) and isinstance(autumn_carrier, Triggered)
    daily = Batch(window=Daily(9), key="post_id")

    def open_at(notification: uuid.UUID, recipient: str, now: dt.datetime) -> dt.datetime:
        [where] = planning.join_batches(
            tx_cw.engine,
            db,
            [
                planning.BatchPlan(
                    notification_id=notification,
                    tenant_id="t1",
                    recipient_id=recipient,
                    workflow_key="daily_digest",
                    batch=daily,
                    batch_key=now.isoformat(),
                    channel="email",
                )
            ],
            now=now,
        )
        assert where.digest.opened and where.digest.position == 1
        return where.digest.closes_at

    utc = dt.UTC
    ny, plain = carriers.notification_ids
    spring = dt.datetime(2026, 3, 7, 14, 0, tzinfo=utc)  # Saturday 09:00 EST
    assert open_at(ny, "ny", spring) == dt.datetime(2026, 3, 8, 13, 0, tzinfo=utc)  # 09:00 EDT
    autumn = dt.datetime(2026, 10, 31, 13, 0, tzinfo=utc)  # Saturday 09:00 EDT
    assert open_at(autumn_carrier.notification_ids[0], "ny", autumn) == dt.datetime(
        2026, 11, 1, 14, 0, tzinfo=utc
    )  # 09:00 EST, 25 hours later
    assert open_at(plain, "utc", spring) == dt.datetime(2026, 3, 8, 9, 0, tzinfo=utc)
    assert rows(db, "SELECT count(*) FROM chimeway_digests WHERE state = 'open'") == [(3,)]


class FanOutDigest(CommentDigest):
    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=r) for r in params["to"]]


def test_one_timer_closes_the_batches_due_with_it_and_drops_their_timers(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    opened = cw.trigger(
        FanOutDigest,
        {"to": ["a", "b", "c"], "by": "u", "text": "t", "post_id": "p"},
        tenant_id="t1",
        idempotency_key="fan",
    )
    assert isinstance(opened, Triggered) and len(opened.run_ids) == 3
    timers = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"
    assert count(committed_db, timers) == 3  # one per batch, all at the same instant
    result = progress_timer(cw.engine, opened.run_ids[0], now=dt.datetime.now(dt.UTC) + WINDOW)
    assert isinstance(result, Advanced)
    assert count(committed_db, "SELECT count(*) FROM chimeway_digests WHERE state = 'closed'") == 3
    # The others' timers would only find their batches closed: they are gone. Called outside
    # a worker, the timer's own job is still queued: it goes with them (in a worker it runs).
    assert count(committed_db, timers) == 0
    drain(cw, queues=["chimeway_delivery"])
    assert sorted(r.recipient_id for r in adapters["email"].sent) == ["a", "b", "c"]


def test_triggers_racing_the_close_each_land_in_exactly_one_batch(
    make_cw: Any, committed_db: str, adapters: Recorders
) -> None:
    cw = make_cw(pool_max_size=24)
    first = comment(cw, 0)
    run_id = first.run_ids[0]
    numbers = iter(range(1, 41))
    take = threading.Lock()
    closed: list[Any] = []

    def either() -> Any:
        with take:
            n = next(numbers, None)
        if n == 20:  # one of the racers closes the batch instead (its window is over)
            closed.append(cw.progression.progress_run(run_id, now=dt.datetime.now(dt.UTC) + WINDOW))
        assert n is not None
        return comment(cw, n)

    concurrently(21, either)
    [result] = closed
    assert isinstance(result, Advanced)
    with psycopg.connect(committed_db) as conn:
        digests = rows(
            conn,
            "SELECT g.state::text, g.member_count, count(m.*), "
            "       array_agg(m.position ORDER BY m.position) "
            "FROM chimeway_digests g JOIN chimeway_digest_members m ON m.digest_id = g.id "
            "GROUP BY g.id ORDER BY g.opened_at",
        )
        notifications = count(conn, "SELECT count(*) FROM chimeway_notifications")
        members = count(conn, "SELECT count(*) FROM chimeway_digest_members")
    # Every notification is in exactly one batch; each batch's members are contiguous.
    assert members == notifications == 22
    assert [d[0] for d in digests] in (["closed"], ["closed", "open"])
    for _, member_count, n, positions in digests:
        assert member_count == n and positions == list(range(1, n + 1))
    drain(cw, queues=["chimeway_delivery"])
    # The closed batch's members were all folded into its one digest.
    [sent] = adapters["email"].sent
    assert sent.content["subject"] == f"{digests[0][1]} new comments"
    with psycopg.connect(committed_db) as conn:
        assert count(
            conn, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'digested'"
        ) == (digests[0][1] - 1)


def test_cancelling_a_collecting_run_closes_its_batch_and_cancels_its_members(
    tx_cw: Chimeway, db: Any, adapters: Recorders
) -> None:
    """Nothing may join a batch that will never be sent, nor stay held for it."""
    a, b, c = (comment(tx_cw, n, conn=db) for n in range(3))
    [run_id] = {r.run_ids[0] for r in (a, b, c)}
    cancelled = tx_cw.cancel_run("t1", run_id, "spam thread", cancelled_by="ops", conn=db)
    assert cancelled.cancelled and sorted(cancelled.delivery_ids) == sorted(
        b.delivery_ids + c.delivery_ids
    )
    assert rows(db, "SELECT state::text, close_reason FROM chimeway_digests") == [
        ("closed", "run_cancelled")
    ]
    assert statuses(db) == {"cancelled": 2}
    explained = tx_cw.explain_delivery("t1", b.delivery_ids[0], conn=db)
    assert explained.digest is not None and explained.digest.close_reason == "run_cancelled"
    d = comment(tx_cw, 3, conn=db)  # a new batch, with a run of its own
    assert d.run_ids != [run_id]
    assert sorted(rows(db, "SELECT state::text, member_count FROM chimeway_digests")) == [
        ("closed", 3),
        ("open", 1),
    ]
    result = tx_cw.progression.progress_run(d.run_ids[0], now=later(db), conn=db)
    assert isinstance(result, Advanced)  # the new batch closes and sends as usual
    drain(tx_cw, conn=db)
    assert len(adapters["email"].sent) == 1
