"""Deliveries sent in batches (one ``deliver_many`` job per chunk of a fan-out): the same
rows as one job per delivery, each delivery sent once however batches overlap, and one bad
row failing alone."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chimeway import (
    Bounced,
    Chimeway,
    InvalidArgument,
    OnOutcome,
    Permanent,
    RunState,
    Sent,
    Step,
    Stop,
    Temporary,
    Throttle,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.adapters import DeliveryRequest
from chimeway.engine import deliver
from tests.integration.conftest import concurrently, count
from tests.integration.notifiers import WithWorkflow
from tests.integration.snapshots import snapshot
from tests.integration.test_resilience import READ, WAIT

BRANCHING = Workflow(
    key="branching",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[
                OnOutcome(outcome="delivered", to_step="email"),
                Stop(outcome="bounced"),
                WaitUntil(delay=dt.timedelta(hours=1), to_step="email"),
            ],
        ),
        Step("email", channel="email"),
    ],
)

# What the adapter does for a recipient named "<scenario>-<n>", call after call.
SCRIPTS: dict[str, list[Any]] = {
    "sent": [],
    "alsosent": [],
    "bounced": [Bounced("mailbox full")],
    "rejected": [Permanent("no such user")],
    "retrying": [Temporary("timeout")],
    "exhausted": [Temporary("timeout")],  # its delivery allows one attempt only
    "crashing": [RuntimeError("adapter bug")],
}


class ByRecipient:
    """Answers by the recipient's scenario; counts calls per delivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Any]] = {}
        self.calls: Counter[uuid.UUID] = Counter()

    def deliver(self, request: DeliveryRequest) -> Sent:
        with self._lock:
            self.calls[request.delivery_id] += 1
            script = self._scripts.setdefault(
                request.recipient_id, deque(SCRIPTS[request.recipient_id.split("-")[0]])
            )
            scripted = script.popleft() if script else None
        if scripted is not None:
            raise scripted
        return Sent(provider_message_id="p-1", meta={"ok": True})


def start(cw: Chimeway, users: list[str], key: str = "k") -> Triggered:
    result = cw.trigger(
        WithWorkflow(BRANCHING), {"users": users}, tenant_id="t", idempotency_key=key
    )
    assert isinstance(result, Triggered)
    return result


def step_deliveries(url: str, step: str) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    """recipient -> (delivery, run) for the deliveries of ``step``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.recipient_id, d.id, d.workflow_run_id FROM chimeway_deliveries d "
            "JOIN chimeway_workflow_steps s ON s.id = d.workflow_step_id WHERE s.step_key = %s",
            [step],
        ).fetchall()
    return {recipient: (delivery, run) for recipient, delivery, run in rows}


def test_a_batch_writes_what_one_job_per_delivery_writes(make_cw: Any, committed_db: str) -> None:
    adapter = ByRecipient()
    cw = make_cw(adapters={"in_app": adapter, "email": adapter})
    users = [f"{scenario}-{n}" for n in (1, 2) for scenario in SCRIPTS]
    start(cw, users)
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "UPDATE chimeway_deliveries SET max_attempts = 1 WHERE recipient_id LIKE 'exh%'"
        )
    notices = step_deliveries(committed_db, "notice")
    for scenario in SCRIPTS:  # one job per delivery
        cw.deliver(notices[f"{scenario}-1"][0])
    batch = [notices[f"{scenario}-2"][0] for scenario in SCRIPTS]
    results = cw.deliver_many(batch)  # one job for all
    assert [(r.delivery_id, r.action) for r in results] == list(
        zip(
            batch,
            [
                "succeeded",
                "succeeded",
                "cancelled",
                "cancelled",
                "retry_scheduled",
                "cancelled",
                "retry_scheduled",
            ],
            strict=True,
        )
    )
    emails = step_deliveries(committed_db, "email")  # planned by the advancing runs
    assert sorted(emails) == ["alsosent-1", "alsosent-2", "sent-1", "sent-2"]
    cw.deliver(emails["sent-1"][0])
    cw.deliver(emails["alsosent-1"][0])
    assert [
        r.action for r in cw.deliver_many([emails[u][0] for u in ("sent-2", "alsosent-2")])
    ] == [
        "succeeded",
        "succeeded",
    ]

    states = {u: cw.workflows.explain("t", run).state for u, (_, run) in notices.items()}
    assert {u: s for u, s in states.items() if u.endswith("-2")} == {
        "sent-2": RunState.COMPLETED,
        "alsosent-2": RunState.COMPLETED,
        "bounced-2": RunState.STOPPED,
        "rejected-2": RunState.WAITING,
        "retrying-2": RunState.ACTIVE,
        "exhausted-2": RunState.WAITING,
        "crashing-2": RunState.ACTIVE,
    }
    for scenario in SCRIPTS:
        one, many = notices[f"{scenario}-1"][1], notices[f"{scenario}-2"][1]
        assert snapshot(committed_db, many) == snapshot(committed_db, one), scenario
    assert set(adapter.calls.values()) == {1}


def test_overlapping_batches_send_each_delivery_once(make_cw: Any, committed_db: str) -> None:
    adapter = ByRecipient()
    cw = make_cw(adapters={"in_app": adapter, "email": adapter}, pool_max_size=12)
    runs = start(cw, [f"sent-{i}" for i in range(40)]).run_ids
    ids = [d for d, _ in step_deliveries(committed_db, "notice").values()]
    orders = []
    for seed in range(6):  # every worker gets all the ids, each in its own order
        order = list(ids)
        random.Random(seed).shuffle(order)
        orders.append(order)
    queue = iter(orders)
    lock = threading.Lock()

    def worker() -> list[str]:
        with lock:
            order = next(queue)
        return [r.action for r in cw.deliver_many(order)]

    outcomes = Counter(a for actions in concurrently(6, worker) for a in actions)
    assert outcomes == {"succeeded": 40, "skipped": 200}
    assert set(adapter.calls.values()) == {1} and len(adapter.calls) == 40
    assert count(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 40
    emails = step_deliveries(committed_db, "email")
    assert sorted(run for _, run in emails.values()) == sorted(runs)  # each advanced once


class Rendezvous:
    """An adapter whose calls succeed only if ``parties`` of them are in flight together."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    def deliver(self, request: DeliveryRequest) -> Sent:
        self.barrier.wait()  # BrokenBarrierError (a failed attempt) if the calls were serial
        return Sent(provider_message_id="p")


def test_the_sends_of_a_batch_run_side_by_side(make_cw: Any, committed_db: str) -> None:
    adapter = Rendezvous(4)
    cw = make_cw(adapters={"in_app": adapter, "email": adapter}, send_concurrency=4)
    start(cw, [f"sent-{i}" for i in range(4)])
    ids = [d for d, _ in step_deliveries(committed_db, "notice").values()]
    assert [r.action for r in cw.deliver_many(ids)] == ["succeeded"] * 4


class OneSlow:
    """Sends at once, except to ``slow-*`` recipients, which wait for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def deliver(self, request: DeliveryRequest) -> Sent:
        if request.recipient_id.startswith("slow") and not self.release.wait(timeout=30):
            raise TimeoutError("never released")
        return Sent(provider_message_id="p")


def test_a_slow_send_does_not_hold_back_the_record_of_its_chunk(
    make_cw: Any, committed_db: str
) -> None:
    adapter = OneSlow()
    # A chunk records what finished every stuck_after / 10 = 0.2 s.
    cw = make_cw(adapters={"in_app": adapter}, stuck_after=dt.timedelta(seconds=2))
    start(cw, ["sent-1", "slow-2", "sent-3"])
    notices = step_deliveries(committed_db, "notice")
    outcome: list[Any] = []
    sender = threading.Thread(
        target=lambda: outcome.append(cw.deliver_many([d for d, _ in notices.values()]))
    )
    sender.start()

    def status(user: str) -> str:
        return str(cw.delivery("t", notices[user][0]).status)

    deadline = time.monotonic() + 20
    while {status("sent-1"), status("sent-3")} != {"succeeded"}:
        assert time.monotonic() < deadline, "the quick sends were not recorded"
        time.sleep(0.02)  # polling the database, with a deadline
    assert status("slow-2") == "dispatched"  # still being sent
    adapter.release.set()
    sender.join(timeout=30)
    assert [r.action for r in outcome[0]] == ["succeeded"] * 3
    assert status("slow-2") == "succeeded"


class Unreadable(Temporary):
    """A failure class that skipped DeliveryFailure.__init__: it has no meta."""

    def __init__(self) -> None:
        Exception.__init__(self, "no meta")


class Mixed:
    def deliver(self, request: DeliveryRequest) -> Sent:
        if request.recipient_id.startswith("bad"):
            raise Unreadable()
        return Sent(provider_message_id="p")


def test_a_send_whose_outcome_cannot_be_read_is_a_failed_attempt_beside_the_others(
    make_cw: Any, committed_db: str
) -> None:
    cw = make_cw(adapters={"in_app": Mixed()})
    start(cw, ["sent-1", "bad-2", "sent-3"])
    notices = step_deliveries(committed_db, "notice")
    results = cw.deliver_many([notices[u][0] for u in ("sent-1", "bad-2", "sent-3")])
    assert [r.action for r in results] == ["succeeded", "retry_scheduled", "succeeded"]
    with psycopg.connect(committed_db) as conn:
        row = conn.execute(
            "SELECT outcome, error_class, error FROM chimeway_delivery_attempts"
            " WHERE delivery_id = %s",
            [notices["bad-2"][0]],
        ).fetchone()
    assert row is not None and row[:2] == ("failed", "unknown")
    assert row[2].startswith("AttributeError: 'Unreadable' object has no attribute")


def refuse(url: str, table: str, column: str, value: uuid.UUID) -> None:
    """A database trigger that refuses rows of ``table`` whose ``column`` is ``value``."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'corrupt row'; END $$"
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER refuse_row BEFORE INSERT ON {} FOR EACH ROW"
                " WHEN (NEW.{} = {}) EXECUTE FUNCTION refuse_row()"
            ).format(sql.Identifier(table), sql.Identifier(column), sql.Literal(str(value)))
        )


def test_one_attempt_the_database_refuses_fails_alone(make_cw: Any, committed_db: str) -> None:
    adapter = ByRecipient()
    cw = make_cw(adapters={"in_app": adapter, "email": adapter})
    start(cw, ["sent-1", "sent-2", "sent-3"])
    notices = step_deliveries(committed_db, "notice")
    bad = notices["sent-2"][0]
    refuse(committed_db, "chimeway_delivery_attempts", "delivery_id", bad)
    with pytest.raises(psycopg.errors.RaiseException, match="corrupt row"):
        cw.deliver_many([d for d, _ in notices.values()])
    for user, (delivery_id, _) in notices.items():
        status = cw.delivery("t", delivery_id).status
        # The bad one stays dispatched: a takeover after stuck_after tries it again.
        assert status == ("dispatched" if delivery_id == bad else "succeeded"), user
    assert sorted(step_deliveries(committed_db, "email")) == ["sent-1", "sent-3"]


def test_one_run_the_database_refuses_to_advance_gets_a_progress_job(
    make_cw: Any, committed_db: str
) -> None:
    adapter = ByRecipient()
    cw = make_cw(adapters={"in_app": adapter, "email": adapter})
    start(cw, ["sent-1", "sent-2", "sent-3"])
    notices = step_deliveries(committed_db, "notice")
    bad_run = notices["sent-2"][1]
    refuse(committed_db, "chimeway_deliveries", "workflow_run_id", bad_run)
    results = cw.deliver_many([d for d, _ in notices.values()])
    assert [r.action for r in results] == ["succeeded"] * 3  # every attempt is recorded
    assert sorted(step_deliveries(committed_db, "email")) == ["sent-1", "sent-3"]
    assert cw.workflows.explain("t", bad_run).state == RunState.ACTIVE
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress' "
            "AND args->>'run_id' = %s",
            str(bad_run),
        )
        == 1
    )


def test_the_sweep_leaves_deliveries_a_queued_chunk_holds(cw: Chimeway, committed_db: str) -> None:
    start(cw, ["sent-1", "sent-2", "sent-3"])
    with psycopg.connect(committed_db) as conn:  # long ago: they look stuck
        conn.execute(
            "UPDATE chimeway_deliveries SET status_changed_at = now() - interval '1 day', "
            "created_at = now() - interval '1 day'"
        )
    assert cw.sweep().deliveries_redriven == 0  # a backlog, not a lost job
    with psycopg.connect(committed_db) as conn:  # the chunk job is lost
        conn.execute("DELETE FROM procrastinate_jobs")
    assert cw.sweep().deliveries_redriven == 3


@pytest.mark.parametrize("option", ["delivery_batch_size", "send_concurrency"])
@pytest.mark.parametrize("value", [0, -1, True, 2.5, "5"])
def test_batch_options_must_be_whole_numbers_of_at_least_one(
    shared_db: str, option: str, value: Any
) -> None:
    with pytest.raises(InvalidArgument, match=f"{option} must be a whole number of at least 1"):
        Chimeway(shared_db, **{option: value})


def test_a_signal_that_came_early_cancels_only_its_own_run_in_a_batch(
    cw: Chimeway, committed_db: str
) -> None:
    result = cw.trigger(
        WithWorkflow(WAIT),  # the notice's wait is cancelled by READ
        {"users": ["sent-1", "sent-2", "sent-3"]},
        tenant_id="t",
        idempotency_key="k",
    )
    assert isinstance(result, Triggered)
    # sent-2 read the notice before its delivery was recorded: no run was waiting yet.
    assert cw.route_signal(cw.track_signal("t", "sent-2", READ).signal_id).resumed == []
    assert [r.action for r in cw.deliver_many(result.delivery_ids)] == ["succeeded"] * 3
    runs = {u: run for u, (_, run) in step_deliveries(committed_db, "notice").items()}
    explained = {u: cw.workflows.explain("t", run) for u, run in runs.items()}
    assert {u: (e.state, e.terminal_reason) for u, e in explained.items()} == {
        "sent-1": (RunState.WAITING, None),
        "sent-2": (RunState.COMPLETED, "wait_cancelled_by_signal"),
        "sent-3": (RunState.WAITING, None),
    }
    timers = count(
        committed_db,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'",
    )
    assert timers == 3  # sent-2's timer finds its run completed and does nothing


def test_two_deliveries_of_one_run_in_a_batch_progress_it_once(
    cw: Chimeway, committed_db: str
) -> None:
    start(cw, ["sent-1"])
    notice, run_id = step_deliveries(committed_db, "notice")["sent-1"]
    assert cw.deliver(notice).action == "succeeded"  # the run moved on to its email step
    email = step_deliveries(committed_db, "email")["sent-1"][0]
    with psycopg.connect(committed_db) as conn:  # an operator queues the notice again
        conn.execute(
            "UPDATE chimeway_deliveries SET status = 'pending', terminal_at = NULL WHERE id = %s",
            [notice],
        )
    assert [r.action for r in cw.deliver_many([notice, email])] == ["succeeded", "succeeded"]
    explained = cw.workflows.explain("t", run_id)
    assert (explained.state, explained.terminal_reason) == ("completed", "implicit_completion")
    reasons = [t.reason for t in cw.workflows.list_traces("t", run_id)]
    assert reasons.count("workflow_completed") == 1
    assert reasons.count("step_activated") == 2  # notice, email: nothing planned twice
    progress_jobs = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"
    assert count(committed_db, progress_jobs) == 0  # no failure left for a progress job


def test_each_recorded_outcome_logs_its_action(
    make_cw: Any, committed_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = ByRecipient()
    cw = make_cw(adapters={"in_app": adapter, "email": adapter})
    start(cw, [f"{scenario}-1" for scenario in SCRIPTS])
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "UPDATE chimeway_deliveries SET max_attempts = 1 WHERE recipient_id LIKE 'exh%'"
        )
    notices = step_deliveries(committed_db, "notice")
    caplog.set_level(logging.INFO, logger="chimeway.engine.recording")
    cw.deliver_many([d for d, _ in notices.values()])
    by_delivery = {d: u.split("-")[0] for u, (d, _) in notices.items()}
    # Only the record's lines: an earlier test may have set the `chimeway` logger to INFO
    # (the CLI configures logging), which lets the runs' lines through too.
    records = [r for r in caplog.records if r.name == "chimeway.engine.recording"]
    logged = {
        (by_delivery[uuid.UUID(r.delivery_id)], r.action, getattr(r, "reason", None))
        for r in records
        if r.action != "delivery.dispatched"
    }
    assert logged == {
        ("sent", "delivery.succeeded", None),
        ("alsosent", "delivery.succeeded", None),
        ("bounced", "delivery.cancelled", "bounced"),
        ("rejected", "delivery.cancelled", "permanent_failure"),
        ("retrying", "delivery.retry_scheduled", None),
        ("exhausted", "delivery.retries_exhausted", "retries_exhausted"),
        ("crashing", "delivery.retry_scheduled", None),
    }
    assert all(r.attempt_number == 1 for r in records)


# -- chained steps ------------------------------------------------------------------------------


def jobs_for(url: str, delivery_id: uuid.UUID) -> list[tuple[str, bool]]:
    """(status, due now) of the deliver jobs that name the delivery."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status::text, scheduled_at IS NULL OR scheduled_at <= now() "
            "FROM procrastinate_jobs WHERE args->>'delivery_id' = %s "
            "OR args->'delivery_ids' ? %s",
            [str(delivery_id), str(delivery_id)],
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_a_deliver_job_sends_its_runs_next_step_itself(make_cw: Any, committed_db: str) -> None:
    """What a `deliver` job does (chain=True): the run's email step, due at once, is claimed
    in the record of its notice and sent by the same call, with no job of its own."""
    adapter = ByRecipient()
    cw = make_cw(adapters={"in_app": adapter, "email": adapter})
    start(cw, ["sent-1"])
    notice, run_id = step_deliveries(committed_db, "notice")["sent-1"]
    assert deliver.deliver(cw.engine, notice, chain=True).action == "succeeded"
    email = step_deliveries(committed_db, "email")["sent-1"][0]
    assert cw.delivery("t", email).status == "succeeded"
    assert jobs_for(committed_db, email) == []
    assert cw.workflows.explain("t", run_id).state == RunState.COMPLETED
    assert set(adapter.calls.values()) == {1}


def test_a_chained_step_that_a_throttle_holds_gets_its_job_at_the_throttles_time(
    make_cw: Any, committed_db: str
) -> None:
    adapter = ByRecipient()
    cw = make_cw(
        adapters={"in_app": adapter, "email": adapter},
        throttles={"email": Throttle(1, per=dt.timedelta(hours=1))},
    )
    start(cw, ["sent-1", "alsosent-1"])
    notices = step_deliveries(committed_db, "notice")
    assert deliver.deliver(cw.engine, notices["sent-1"][0], chain=True).action == "succeeded"
    assert deliver.deliver(cw.engine, notices["alsosent-1"][0], chain=True).action == "succeeded"
    emails = step_deliveries(committed_db, "email")
    assert cw.delivery("t", emails["sent-1"][0]).status == "succeeded"  # chained
    held = emails["alsosent-1"][0]
    assert cw.delivery("t", held).status == "pending"  # the throttle's hour is used up
    assert jobs_for(committed_db, held) == [("todo", False)]  # at the throttle's time, not now
