"""The due-time waker: its planning query, and a job due in a second starting long before the
workers' next poll (a bounded wait, not a timing benchmark)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from chimeway import Chimeway, Maintenance, RunState, Step, Triggered, WaitUntil, Workflow
from chimeway.store import waker as store
from chimeway.testing import drain
from chimeway.waker import Waker
from chimeway.worker import BackgroundWorker, WorkerOptions, _Firing
from tests.acceptance.conftest import wait_until
from tests.integration.conftest import Recorders
from tests.integration.notifiers import WithWorkflow

NEVER = "0 0 1 1 *"  # maintenance once a year: no periodic job wakes the worker meanwhile
LONG_POLL = 30.0


def schedule(conn: psycopg.Connection[Any], queue: str, in_seconds: float) -> int:
    """A raw job of ``bench``-like task ``t.stamp`` due ``in_seconds`` after the database's
    clock, through Procrastinate's own defer function (so its insert trigger fires)."""
    row = conn.execute(
        "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, 't.stamp', 0, NULL, NULL,"
        " '{}'::jsonb, clock_timestamp() + %s * interval '1 second')"
        "::procrastinate_job_to_defer_v1]))",
        [queue, in_seconds],
    ).fetchone()
    assert row is not None
    return int(row[0])


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def plan(url: str, mark: dt.datetime, queues: list[str] | None) -> store.Plan:
    async def run() -> store.Plan:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await store.plan(
                conn,
                mark=mark,
                queues=queues,
                stale_after=dt.timedelta(milliseconds=20),
                lookback=dt.timedelta(seconds=2),
            )

    return asyncio.run(run())


def test_the_plan_names_what_is_due_what_still_waits_and_when_the_next_is_due(
    committed_db: str,
) -> None:
    with psycopg.connect(committed_db, autocommit=True) as conn:
        late = schedule(conn, "a", -0.5)  # due half a second ago, nobody took it
        early = schedule(conn, "b", 10)
        soon = schedule(conn, "c", 2)
        before = conn.execute("SELECT clock_timestamp() - interval '1 second'").fetchone()
    assert before is not None
    everything = plan(committed_db, before[0], None)
    assert everything.due_queues == ["a"]
    assert everything.due_jobs == [late]
    assert everything.stale_queues == ["a"]
    assert everything.next_in is not None and 1.5 < everything.next_in <= 2.0
    only_b = plan(committed_db, before[0], ["b"])
    assert only_b.due_queues == [] and only_b.stale_queues == []
    assert only_b.next_in is not None and 9 < only_b.next_in <= 10
    announced = plan(committed_db, everything.db_now, None)  # `a` was announced already
    assert announced.due_queues == [] and announced.stale_queues == ["a"]
    assert {early, soon} - set(everything.due_jobs) == {early, soon}


def listening(url: str) -> bool:
    """Whether a Procrastinate worker listens for new jobs on this database."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %%procrastinate%%'"
        ).fetchone()
    return bool(row and row[0])


class Stamps:
    """A task ``t.stamp`` on the Chimeway's Procrastinate App; an event per run."""

    def __init__(self, cw: Chimeway) -> None:
        self.ran = threading.Event()

        @cw.procrastinate.task(name="t.stamp", queue="t")
        def stamp() -> None:
            self.ran.set()


@pytest.fixture
def quiet_cw(committed_db: str) -> Iterator[Chimeway]:
    cron = Maintenance(sweep_cron=NEVER, stalled_cron=NEVER)
    with Chimeway(committed_db, maintenance=cron) as cw:
        yield cw


def test_a_job_due_in_a_second_starts_long_before_the_next_poll(
    quiet_cw: Chimeway, committed_db: str
) -> None:
    stamps = Stamps(quiet_cw)
    options = WorkerOptions(poll_interval=LONG_POLL)
    with BackgroundWorker(quiet_cw, options) as worker:
        waker = worker.waker
        assert waker is not None
        wait_until(waker.leading.is_set, timeout=10)
        wait_until(lambda: listening(committed_db), timeout=10)
        with psycopg.connect(committed_db, autocommit=True) as conn:
            schedule(conn, "t", 1.0)
        # Its insert woke the worker, which found nothing due and sleeps for 30 s.
        assert stamps.ran.wait(timeout=10), "the job did not start before the poll"


#: A notice, a one-second wait, an email.
ONE_SECOND_WAIT = Workflow(
    key="second",
    version=1,
    steps=[
        Step("notice", channel="in_app", progress=[WaitUntil(delay=1, to_step="email")]),
        Step("email", channel="email"),
    ],
)


def test_the_leader_fires_a_runs_due_timer_itself(
    committed_db: str, adapters: Recorders, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chimeway.worker")
    cron = Maintenance(sweep_cron=NEVER, stalled_cron=NEVER)
    chosen = {c: adapters[c] for c in ("in_app", "email")}
    with (
        Chimeway(committed_db, maintenance=cron, adapters=chosen) as cw,
        BackgroundWorker(cw, WorkerOptions(poll_interval=LONG_POLL)) as worker,
    ):
        assert worker.waker is not None
        wait_until(worker.waker.leading.is_set, timeout=10)
        wait_until(lambda: listening(committed_db), timeout=10)
        result = cw.trigger(
            WithWorkflow(ONE_SECOND_WAIT), {"users": ["u1"]}, tenant_id="t", idempotency_key="k"
        )
        assert isinstance(result, Triggered)
        run_id = result.run_ids[0]
        wait_until(lambda: cw.workflows.explain("t", run_id).state == RunState.COMPLETED, 15)
    # Not through its timer job (no fetch could find it before the 30 s poll): the leader
    # moved the run on at its due time and deleted the job.
    assert "fired due timers" in caplog.text
    with psycopg.connect(committed_db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"
        ).fetchone()
    assert row == (0,)


def test_the_leader_fires_on_its_own_connection_while_the_jobs_hold_the_pools(
    committed_db: str, adapters: Recorders
) -> None:
    cron = Maintenance(sweep_cron=NEVER, stalled_cron=NEVER)
    chosen = {c: adapters[c] for c in ("in_app", "email")}

    def state(run_id: Any) -> str:
        with psycopg.connect(committed_db) as conn:
            row = conn.execute(
                "SELECT state::text FROM chimeway_workflow_runs WHERE id = %s", [run_id]
            ).fetchone()
        assert row is not None
        return str(row[0])

    def start(key: str) -> Any:
        result = cw.trigger(
            WithWorkflow(ONE_SECOND_WAIT), {"users": [key]}, tenant_id="t", idempotency_key=key
        )
        assert isinstance(result, Triggered)
        return result.run_ids[0]

    with (
        Chimeway(committed_db, maintenance=cron, adapters=chosen) as cw,
        BackgroundWorker(cw, WorkerOptions(poll_interval=LONG_POLL)) as worker,
    ):
        assert worker.waker is not None
        wait_until(worker.waker.leading.is_set, timeout=10)
        wait_until(lambda: listening(committed_db), timeout=10)
        first = start("u1")  # its firing takes the leader's connection
        wait_until(lambda: state(first) == "completed", 15)
        second = start("u2")
        wait_until(lambda: state(second) == "waiting", 15)
        held = []  # every other connection of the pool, as busy jobs would hold them
        try:
            while True:
                held.append(cw.engine.pool.getconn(timeout=0.5))
        except PoolTimeout:
            pass
        try:
            # Due in a second; the poll is 30 s away and no pool connection is free.
            wait_until(lambda: state(second) != "waiting", 15)
        finally:
            for conn in held:
                cw.engine.pool.putconn(conn)
        wait_until(lambda: state(second) == "completed", 15)


def test_without_the_waker_the_same_job_waits_for_the_poll(
    quiet_cw: Chimeway, committed_db: str
) -> None:
    stamps = Stamps(quiet_cw)
    with BackgroundWorker(quiet_cw, WorkerOptions(poll_interval=LONG_POLL, waker=False)) as w:
        assert w.waker is None
        wait_until(lambda: listening(committed_db), timeout=10)
        with psycopg.connect(committed_db, autocommit=True) as conn:
            schedule(conn, "t", 1.0)
        assert not stamps.ran.wait(timeout=4)


def test_a_retry_rescheduled_to_now_wakes_the_workers(
    quiet_cw: Chimeway, committed_db: str
) -> None:
    """Procrastinate notifies inserts only; Chimeway's trigger announces a job moved back
    to ``todo`` (a retry) that is due now, with or without the waker."""
    stamps = Stamps(quiet_cw)
    with psycopg.connect(committed_db, autocommit=True) as conn:
        job = schedule(conn, "t", 3600)
        with BackgroundWorker(quiet_cw, WorkerOptions(poll_interval=LONG_POLL, waker=False)):
            wait_until(lambda: listening(committed_db), timeout=10)
            conn.execute("UPDATE procrastinate_jobs SET scheduled_at = NULL WHERE id = %s", [job])
            assert stamps.ran.wait(timeout=10)


def test_one_waker_leads_per_queue_set(committed_db: str) -> None:
    async def run() -> tuple[int, bool, bool]:
        pair = [Waker(committed_db, ["a", "b"]), Waker(committed_db, ["b", "a"])]
        other = Waker(committed_db, ["c"])
        tasks = {w: asyncio.create_task(w.run()) for w in (*pair, other)}
        try:
            await asyncio.wait_for(other.leading.wait(), 10)
            await asyncio.wait(
                [asyncio.create_task(w.leading.wait()) for w in pair],
                timeout=10,
                return_when=asyncio.FIRST_COMPLETED,
            )
            await asyncio.sleep(0.2)  # the standby stays one
            leaders = [w for w in pair if w.leading.is_set()]
            standby = next(w for w in pair if w not in leaders)
            tasks[leaders[0]].cancel()  # the leader goes away: the standby takes over
            await asyncio.wait_for(standby.leading.wait(), 10)
            return len(leaders), standby.leading.is_set(), other.leading.is_set()
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    leaders, took_over, other_led = asyncio.run(run())
    assert leaders == 1
    assert took_over and other_led


def test_the_leader_does_not_announce_the_due_jobs_of_a_queue_its_hook_covers(
    committed_db: str,
) -> None:
    """A hook that covers its queue (the firing has claimed the due runs, whose timer jobs
    stay visible until it commits) keeps those jobs from being announced; one that covers
    nothing leaves them announced, as before."""

    async def run(queue: str, covers: bool) -> list[int]:
        called = asyncio.Event()

        async def hook(queues: list[str]) -> list[str]:
            called.set()
            return queues if covers else []

        waker = Waker(committed_db, [queue], on_due=hook, stale_after=30)
        async with await psycopg.AsyncConnection.connect(committed_db, autocommit=True) as ear:
            await ear.execute(f'LISTEN "procrastinate_queue_v1#{queue}"')
            task = asyncio.create_task(waker.run())
            try:
                await asyncio.wait_for(waker.leading.wait(), 10)
                with psycopg.connect(committed_db, autocommit=True) as conn:
                    job = schedule(conn, queue, 0.5)
                async for _ in ear.notifies(timeout=0.2):  # its insert's own notification
                    pass
                assert not called.is_set()
                await asyncio.wait_for(called.wait(), 10)
                await asyncio.sleep(0.3)  # the announcement follows the hook at once
                heard = [json.loads(n.payload)["job_id"] async for n in ear.notifies(timeout=0.1)]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return [j for j in heard if j == job]

    assert asyncio.run(run("a", covers=True)) == []
    assert len(asyncio.run(run("b", covers=False))) == 1


def test_a_wait_due_while_a_firing_commits_is_fired_at_once_on_another_lane(
    committed_db: str, adapters: Recorders
) -> None:
    """The leader's firing returns once it has claimed its runs; a wait that comes due
    while that firing still works is claimed on a second connection at once, not after
    it, and every run is advanced once."""
    cron = Maintenance(sweep_cron=NEVER, stalled_cron=NEVER)
    chosen = {c: adapters[c] for c in ("in_app", "email")}
    with Chimeway(committed_db, maintenance=cron, adapters=chosen) as cw:
        result = cw.trigger(
            WithWorkflow(ONE_SECOND_WAIT),
            {"users": ["u1", "u2"]},
            tenant_id="t",
            idempotency_key="k",
        )
        assert isinstance(result, Triggered)
        first, second = result.run_ids
        drain(cw)
        waiting = "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'waiting'"
        due = waiting + " AND suspended_until <= now()"
        wait_until(lambda: scalar(committed_db, due) == 2, 10)
        firing = _Firing(cw)
        with (
            psycopg.connect(committed_db) as holder,
            psycopg.connect(committed_db) as blocker,
        ):
            # `second` is held (as by a signal) while the first firing claims `first`.
            holder.execute(
                "SELECT 1 FROM chimeway_workflow_runs WHERE id = %s FOR UPDATE", [second]
            )
            # Every firing then stops at planning the email (as on a busy database).
            blocker.execute("LOCK TABLE chimeway_deliveries IN SHARE MODE")

            async def fire_both() -> tuple[bool, bool]:
                try:
                    one = await asyncio.wait_for(firing.fire(), 10)
                    holder.rollback()  # `second` is free: it comes due for the leader now
                    two = await asyncio.wait_for(firing.fire(), 10)  # the first still works
                    assert scalar(committed_db, waiting) == 2  # neither has committed
                finally:
                    blocker.rollback()
                    holder.rollback()
                    await asyncio.gather(*firing._running.values())
                return one, two

            assert asyncio.run(fire_both()) == (True, True)
        firing.release()
        for run_id in (first, second):
            assert cw.workflows.explain("t", run_id).state == RunState.ACTIVE
            reasons = [t.reason for t in cw.workflows.list_traces("t", run_id)]
            assert reasons.count("reactivated_from_wait") == 1
