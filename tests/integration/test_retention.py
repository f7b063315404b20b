"""Retention: the prune removes finished jobs and history older than their ages, with real rows
of every kind, in batches that skip what others hold, never a live run or delivery, and
while a worker works; ``chimeway prune [--dry-run]`` and the periodic task do the same."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import procrastinate
import psycopg
import pytest
from click.testing import CliRunner
from procrastinate.exceptions import AlreadyEnqueued

from chimeway import (
    Chimeway,
    PruneReport,
    Retention,
    Step,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.cli import cli
from chimeway.store.jobs import TASKS
from chimeway.testing import drain, make_run
from chimeway.worker import BackgroundWorker, WorkerOptions
from tests.integration.conftest import count
from tests.integration.notifiers import Welcome

#: Older than every default age.
OLD = dt.timedelta(days=400)
ONE_STEP = Workflow(key="one", version=1, steps=[Step("notice", channel="in_app")])
WAITS = Workflow(
    key="waits",
    version=1,
    steps=[
        Step("notice", channel="in_app", progress=[WaitUntil(delay=3600, to_step="email")]),
        Step("email", channel="email"),
    ],
)


def sql(cw: Chimeway, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with cw.pool.connection() as conn:
        cursor = conn.execute(statement.encode(), params or None)
        return cursor.fetchall() if cursor.description else []


def backdate(cw: Chimeway, event_ids: Sequence[uuid.UUID], *, rows: bool = True) -> None:
    """Make events (and, with ``rows``, their deliveries and runs) look ``OLD``."""
    ids = list(event_ids)
    sql(cw, "UPDATE chimeway_events SET created_at = created_at - %s WHERE id = ANY(%s)", OLD, ids)
    if not rows:
        return
    sql(
        cw,
        "UPDATE chimeway_deliveries d SET updated_at = d.updated_at - %s "
        "FROM chimeway_notifications n WHERE n.id = d.notification_id AND n.event_id = ANY(%s)",
        OLD,
        ids,
    )
    sql(
        cw,
        "UPDATE chimeway_workflow_runs r SET last_transition_at = r.last_transition_at - %s "
        "FROM chimeway_notifications n WHERE n.id = r.notification_id AND n.event_id = ANY(%s)",
        OLD,
        ids,
    )


def finished_event(cw: Chimeway, key: str, users: Sequence[str] = ("u1",)) -> Triggered:
    result = cw.trigger(Welcome, {"users": list(users)}, tenant_id="t", idempotency_key=key)
    assert isinstance(result, Triggered)
    drain(cw)
    return result


def old_job(cw: Chimeway, *moves: str, old: bool = True) -> int:
    """A job of a test queue moved through ``moves`` by Procrastinate's own triggers (which
    write its events), its events made ``OLD``."""
    [(job_id,)] = sql(
        cw,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('retention_test', 'retention_test', '{}') RETURNING id",
    )
    for status in moves:
        sql(
            cw,
            "UPDATE procrastinate_jobs SET status = %s::procrastinate_job_status WHERE id = %s",
            status,
            job_id,
        )
    if old:
        sql(cw, "UPDATE procrastinate_events SET at = at - %s WHERE job_id = %s", OLD, job_id)
    return int(job_id)


def exists(cw: Chimeway, table: str, ids: Sequence[Any]) -> int:
    return len(sql(cw, f"SELECT id FROM {table} WHERE id = ANY(%s)", list(ids)))


def signal_rows(cw: Chimeway) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A signal routed long ago (to go); one routed now and one never routed (to keep)."""
    old_signal = cw.track_signal("t", "u9", "app.old").signal_id
    new_signal = cw.track_signal("t", "u9", "app.new").signal_id
    drain(cw)
    unrouted = cw.track_signal("t", "u9", "app.unrouted").signal_id
    sql(cw, "UPDATE chimeway_signals SET routed_at = routed_at - %s WHERE id = %s", OLD, old_signal)
    sql(cw, "UPDATE chimeway_signals SET created_at = created_at - %s WHERE id = %s", OLD, unrouted)
    return old_signal, [new_signal, unrouted]


def procrastinate_rows(cw: Chimeway) -> tuple[list[int], list[int], int]:
    """Finished jobs idle for long (to go), a queued one and a recent failure (to keep), the
    number of events of the first; and a periodic-defer row of a task gone long ago."""
    doomed = [
        old_job(cw, "doing", "failed"),
        old_job(cw, "cancelled"),
        old_job(cw, "doing", "aborted"),
        old_job(cw, "doing", "succeeded"),
    ]
    kept = [old_job(cw), old_job(cw, "doing", "failed", old=False)]
    [(events,)] = sql(
        cw, "SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%s)", doomed
    )
    sql(
        cw,
        "INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, defer_timestamp) "
        "VALUES ('renamed_task', '', extract(epoch FROM now() - %s)::bigint), "
        "('still_scheduled', '', extract(epoch FROM now())::bigint)",
        OLD,
    )
    return doomed, kept, int(events)


def test_prune_removes_old_rows_of_every_kind_and_keeps_the_rest(cw: Chimeway) -> None:
    # Chimeway history: finished and old (gone), or live, recent or recently touched (kept).
    plain = finished_event(cw, "plain", ["u1", "u2"])
    completed = make_run(cw, ONE_STEP, state="completed")
    stopped = make_run(cw, ONE_STEP, state="stopped", delivery="cancelled", reason="bounced")
    waiting = make_run(cw, WAITS, state="waiting")
    sending = make_run(cw, ONE_STEP, state="active", delivery="dispatched")
    retrying = make_run(cw, ONE_STEP, state="active", delivery="failed")
    recent = finished_event(cw, "recent")
    touched = finished_event(cw, "touched")
    gone = [plain.event_id, completed.event_id, stopped.event_id]
    live = [waiting.event_id, sending.event_id, retrying.event_id]
    backdate(cw, gone + live)
    backdate(cw, [touched.event_id], rows=False)  # its delivery changed recently
    # A recent webhook event about a delivery of an old event: kept, unlinked from it.
    [(kept_hook,)] = sql(
        cw,
        "INSERT INTO chimeway_webhook_ingress (provider, provider_message_id, delivery_id, "
        "kind, ingress_state) VALUES ('smtp', 'm1', %s, 'delivered', 'processed') "
        "RETURNING id",
        plain.delivery_ids[0],
    )
    [(old_hook,)] = sql(
        cw,
        "INSERT INTO chimeway_webhook_ingress (provider, provider_message_id, kind, "
        "ingress_state, created_at) VALUES ('smtp', 'm2', 'bounced', 'ignored', now() - %s) "
        "RETURNING id",
        OLD,
    )
    [(queued_hook,)] = sql(
        cw,
        "INSERT INTO chimeway_webhook_ingress (provider, provider_message_id, kind, "
        "created_at) VALUES ('smtp', 'm3', 'delivered', now() - %s) RETURNING id",
        OLD,
    )
    old_signal, kept_signals = signal_rows(cw)
    doomed_jobs, kept_jobs, job_events = procrastinate_rows(cw)
    # Processes: one silent for long (gone), this one beating (kept).
    sql(
        cw,
        "INSERT INTO chimeway_processes (id, host, pid, beat_at) VALUES (%s, 'h', 1, now() - %s)",
        uuid.uuid4(),
        OLD,
    )
    before = {t: count(cw.database_url, f"SELECT count(*) FROM {t}") for t in TABLES}

    expected = PruneReport(
        dry_run=True,
        jobs=4,
        job_events=job_events,
        periodic_defers=1,
        events=3,
        signals=1,
        webhooks=1,
        processes=1,
    )
    assert cw.prune(dry_run=True) == expected
    assert {t: count(cw.database_url, f"SELECT count(*) FROM {t}") for t in TABLES} == before

    assert cw.prune() == replace(expected, dry_run=False)
    assert cw.prune() == PruneReport(dry_run=False)

    assert exists(cw, "chimeway_events", gone) == 0
    assert exists(cw, "chimeway_events", [*live, recent.event_id, touched.event_id]) == 5
    under = [*plain.delivery_ids, *completed.delivery_ids.values(), *stopped.delivery_ids.values()]
    assert exists(cw, "chimeway_deliveries", under) == 0
    assert exists(cw, "chimeway_workflow_runs", [completed.run_id, stopped.run_id]) == 0
    assert exists(cw, "chimeway_workflow_runs", [waiting.run_id, sending.run_id]) == 2
    for table, column in ORPHANS:
        assert count(cw.database_url, f"SELECT count(*) FROM {table} WHERE {column}") == 0
    assert sql(cw, "SELECT delivery_id FROM chimeway_webhook_ingress WHERE id = %s", kept_hook) == [
        (None,)
    ]
    assert exists(cw, "chimeway_webhook_ingress", [old_hook]) == 0
    assert exists(cw, "chimeway_webhook_ingress", [kept_hook, queued_hook]) == 2
    assert exists(cw, "chimeway_signals", [old_signal]) == 0
    assert exists(cw, "chimeway_signals", kept_signals) == 2
    assert exists(cw, "procrastinate_jobs", doomed_jobs) == 0
    assert exists(cw, "procrastinate_jobs", kept_jobs) == 2
    assert (
        count(
            cw.database_url,
            "SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%s)",
            doomed_jobs,
        )
        == 0
    )
    defers = {r[0] for r in sql(cw, "SELECT task_name FROM procrastinate_periodic_defers")}
    assert "still_scheduled" in defers
    assert "renamed_task" not in defers
    assert sql(cw, "SELECT id FROM chimeway_processes") == [(cw.engine.liveness.id,)]


TABLES = (
    "chimeway_events",
    "chimeway_notifications",
    "chimeway_deliveries",
    "chimeway_delivery_attempts",
    "chimeway_delivery_transitions",
    "chimeway_workflow_runs",
    "chimeway_workflow_transitions",
    "chimeway_signals",
    "chimeway_webhook_ingress",
    "chimeway_processes",
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
)
#: Rows that would be left behind if the events' removal did not take everything under them
#: (no foreign keys cascade between these tables: migration 0018).
ORPHANS = (
    (
        "chimeway_notifications n",
        "NOT EXISTS (SELECT 1 FROM chimeway_events e WHERE e.id = n.event_id)",
    ),
    (
        "chimeway_delivery_attempts a",
        "NOT EXISTS (SELECT 1 FROM chimeway_deliveries d WHERE d.id = a.delivery_id)",
    ),
    (
        "chimeway_delivery_transitions t",
        "NOT EXISTS (SELECT 1 FROM chimeway_deliveries d WHERE d.id = t.delivery_id)",
    ),
    (
        "chimeway_workflow_transitions t",
        "NOT EXISTS (SELECT 1 FROM chimeway_workflow_runs r WHERE r.id = t.run_id)",
    ),
    (
        "chimeway_workflow_runs r",
        "NOT EXISTS (SELECT 1 FROM chimeway_notifications n WHERE n.id = r.notification_id)",
    ),
    (
        "chimeway_deliveries d",
        "NOT EXISTS (SELECT 1 FROM chimeway_notifications n WHERE n.id = d.notification_id)",
    ),
    (
        "chimeway_deliveries d",
        "d.workflow_run_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM chimeway_workflow_runs r WHERE r.id = d.workflow_run_id)",
    ),
)


def test_live_runs_and_deliveries_are_never_pruned_however_old(cw: Chimeway) -> None:
    deferred = finished_event(cw, "deferred")
    sql(
        cw,
        "UPDATE chimeway_deliveries SET status = 'pending', orchestration_state = 'deferred', "
        "next_eligible_at = now() + interval '1 day' WHERE id = %s",
        deferred.delivery_ids[0],
    )
    live = [  # their jobs are not run: they stay as built
        make_run(cw, WAITS, state="waiting"),
        make_run(cw, ONE_STEP, state="active", delivery="pending"),
        make_run(cw, ONE_STEP, state="active", delivery="dispatched"),
        make_run(cw, ONE_STEP, state="active", delivery="failed"),
        # The run is over but one of its deliveries still retries.
        make_run(cw, ONE_STEP, state="completed", delivery="failed"),
    ]
    events = [m.event_id for m in live] + [deferred.event_id]
    backdate(cw, events)
    assert cw.prune(dry_run=True).events == 0
    assert cw.prune().events == 0
    assert exists(cw, "chimeway_events", events) == len(events)
    assert exists(cw, "chimeway_workflow_runs", [m.run_id for m in live]) == len(live)


def test_batches_skip_rows_another_transaction_holds(make_cw: Callable[..., Chimeway]) -> None:
    cw = make_cw(retention=Retention(batch_size=3))
    made = [finished_event(cw, f"e{i}") for i in range(8)]
    backdate(cw, [m.event_id for m in made])
    held = made[4].event_id
    with psycopg.connect(cw.database_url) as other, other.transaction():
        # What a caller's transaction inserting under the event would hold (a key share).
        other.execute("SELECT 1 FROM chimeway_events WHERE id = %s FOR KEY SHARE", [held])
        started = time.monotonic()
        first = cw.prune()
        assert time.monotonic() - started < 10  # it did not wait for the lock
    assert first.events == 7
    assert exists(cw, "chimeway_events", [held]) == 1
    assert cw.prune().events == 1
    assert exists(cw, "chimeway_events", [m.event_id for m in made]) == 0


def test_prune_runs_while_a_worker_works(make_cw: Callable[..., Chimeway]) -> None:
    cw = make_cw(retention=Retention(batch_size=5))
    old = [finished_event(cw, f"old{i}", [f"a{i}", f"b{i}"]) for i in range(30)]
    backdate(cw, [m.event_id for m in old])
    pruned: list[PruneReport] = []
    with BackgroundWorker(cw, WorkerOptions(concurrency=4, poll_interval=0.1)):
        fresh = cw.trigger(
            Welcome,
            {"users": [f"n{i}" for i in range(200)], "channels": ["in_app", "email"]},
            tenant_id="t",
            idempotency_key="fresh",
        )
        assert isinstance(fresh, Triggered)
        pruning = threading.Thread(target=lambda: pruned.append(cw.prune()))
        pruning.start()
        pruning.join(timeout=60)
        assert pruned and pruned[0].events == len(old)
        deadline = time.monotonic() + 60
        while count(
            cw.database_url,
            "SELECT count(*) FROM chimeway_deliveries WHERE status <> 'succeeded'",
        ):
            assert time.monotonic() < deadline, "the worker did not finish the burst"
            time.sleep(0.05)
    assert count(cw.database_url, "SELECT count(*) FROM chimeway_deliveries") == 400
    assert exists(cw, "chimeway_events", [m.event_id for m in old]) == 0
    assert exists(cw, "chimeway_events", [fresh.event_id]) == 1


def test_the_periodic_task_prunes_and_is_deduplicated(cw: Chimeway) -> None:
    made = finished_event(cw, "e")
    backdate(cw, [made.event_id])
    task = cw.procrastinate.tasks[TASKS["prune"]]
    periodic = list(cw.procrastinate.periodic_registry.periodic_tasks.values())
    assert [p.cron for p in periodic if p.task is task] == ["23 * * * *"]
    # A sync defer through a connection, as a worker's periodic deferrer makes it.
    defer = procrastinate.App(connector=procrastinate.SyncPsycopgConnector()).configure_task
    with cw.pool.connection() as conn:
        with conn.transaction():
            defer(
                TASKS["prune"], queue=task.queue, queueing_lock="chimeway:prune", connection=conn
            ).defer(timestamp=0)
        with pytest.raises(AlreadyEnqueued), conn.transaction():
            defer(
                TASKS["prune"], queue=task.queue, queueing_lock="chimeway:prune", connection=conn
            ).defer(timestamp=1)
    drain(cw)
    assert exists(cw, "chimeway_events", [made.event_id]) == 0


def test_no_cron_no_periodic_prune(make_tx_cw: Callable[..., Chimeway]) -> None:
    cw = make_tx_cw(retention=Retention(cron=None))  # reads no database
    names = [p.task.name for p in cw.procrastinate.periodic_registry.periodic_tasks.values()]
    assert TASKS["prune"] not in names
    assert TASKS["sweep"] in names


def test_kinds_without_an_age_are_kept(make_cw: Callable[..., Chimeway]) -> None:
    cw = make_cw(
        retention=Retention(jobs=None, history=None, signals=None, webhooks=None, processes=None)
    )
    made = finished_event(cw, "e")
    backdate(cw, [made.event_id])
    old_job(cw, "doing", "failed")
    assert cw.prune(dry_run=True) == PruneReport(dry_run=True)
    assert cw.prune() == PruneReport(dry_run=False)
    assert exists(cw, "chimeway_events", [made.event_id]) == 1


def test_cli_prune_dry_run_counts_and_prune_removes(cw: Chimeway, committed_db: str) -> None:
    made = finished_event(cw, "e")
    backdate(cw, [made.event_id])
    runner = CliRunner()
    dry = runner.invoke(cli, ["--database-url", committed_db, "prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "Prune dry run: would remove" in dry.stdout
    assert "1 event(s)" in dry.stdout
    assert exists(cw, "chimeway_events", [made.event_id]) == 1
    done = runner.invoke(cli, ["--database-url", committed_db, "prune", "--json"])
    assert done.exit_code == 0, done.output
    assert '"events": 1' in done.stdout
    assert '"dry_run": false' in done.stdout
    assert exists(cw, "chimeway_events", [made.event_id]) == 0
