"""Acceptance: real ``chimeway worker`` processes run workflows, timers, signals and recover
from crashes, connection loss and shutdowns."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from chimeway import Triggered
from tests.acceptance.app import CLICKED, READ
from tests.acceptance.conftest import Workers, wait_until

pytestmark = pytest.mark.slow


def scalar(url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.encode(), params or None).fetchone()
    return row[0] if row else None


def sent_twice(url: str) -> int:
    """How many deliveries were attempted more than once."""
    return int(
        scalar(
            url,
            "SELECT count(*) FROM (SELECT delivery_id FROM chimeway_delivery_attempts "
            "GROUP BY delivery_id HAVING count(*) > 1) twice",
        )
    )


def run_state(url: str, run_id: uuid.UUID) -> tuple[str, str | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT state::text, terminal_reason FROM chimeway_workflow_runs WHERE id = %s",
            [run_id],
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def reasons(url: str, run_id: uuid.UUID) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT reason FROM chimeway_workflow_transitions WHERE run_id = %s ORDER BY id",
            [run_id],
        )
        return [r[0] for r in rows]


def trigger(cw: Any, users: list[str], key: str = "k", tenant: str = "t") -> Triggered:
    result = cw.trigger("escalation", {"users": users}, tenant_id=tenant, idempotency_key=key)
    assert isinstance(result, Triggered)
    return result


def test_three_step_workflow_with_a_wait_runs_to_completion(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    worker = workers.start()
    cw = app_env()
    run_id = trigger(cw, ["u1"]).run_ids[0]
    wait_until(lambda: run_state(committed_db, run_id)[0] == "completed", timeout=30)
    assert reasons(committed_db, run_id) == [
        "workflow_started",
        "step_activated",
        "waiting_for_step_progression",
        "reactivated_from_wait",
        "step_activated",
        "progressed_on_delivery_outcome",
        "step_activated",
        "workflow_completed",
    ]
    assert (
        scalar(
            committed_db,
            "SELECT string_agg(channel || ':' || status, ',' ORDER BY created_at) "
            "FROM chimeway_deliveries WHERE workflow_run_id = %s",
            run_id,
        )
        == "in_app:succeeded,email:succeeded,sms:succeeded"
    )
    assert worker.stop() == 0
    cw.close()


def test_signal_during_the_wait_resumes_the_run_and_the_timer_does_nothing(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    workers.start(WAIT_SECONDS="3")
    cw = app_env(WAIT_SECONDS="3")
    run_id = trigger(cw, ["u1"]).run_ids[0]
    wait_until(lambda: run_state(committed_db, run_id)[0] == "waiting")
    cw.track_signal("t", "u1", READ)
    wait_until(lambda: run_state(committed_db, run_id) == ("completed", "wait_cancelled_by_signal"))
    # The wait's timer job still fires at due time, and finds nothing to do.
    wait_until(
        lambda: scalar(
            committed_db,
            "SELECT count(*) = 0 FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'",
        ),
        timeout=15,
    )
    assert "reactivated_from_wait" not in reasons(committed_db, run_id)
    assert reasons(committed_db, run_id).count("signal_received") == 1
    assert (
        scalar(committed_db, "SELECT count(*) FROM chimeway_deliveries WHERE channel = 'email'")
        == 0
    )
    cw.close()


def test_on_signal_advances_a_waiting_run(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    workers.start(WAIT_SECONDS="30")
    cw = app_env(WAIT_SECONDS="30")
    run_id = trigger(cw, ["u1"]).run_ids[0]
    wait_until(lambda: run_state(committed_db, run_id)[0] == "waiting")
    cw.track_signal("t", "u1", CLICKED)
    wait_until(lambda: run_state(committed_db, run_id)[0] == "completed")
    assert "progressed_on_signal" in reasons(committed_db, run_id)
    assert (
        scalar(committed_db, "SELECT status::text FROM chimeway_deliveries WHERE channel = 'sms'")
        == "succeeded"
    )
    cw.close()


def test_signals_for_another_tenant_or_actor_touch_nothing(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    workers.start(WAIT_SECONDS="30")
    cw = app_env(WAIT_SECONDS="30")
    run_id = trigger(cw, ["u1"], tenant="t1").run_ids[0]
    wait_until(lambda: run_state(committed_db, run_id)[0] == "waiting")
    before = reasons(committed_db, run_id)
    ids = [
        cw.track_signal("t2", "u1", READ).signal_id,
        cw.track_signal("t1", "u2", READ).signal_id,
    ]
    wait_until(
        lambda: scalar(
            committed_db,
            "SELECT count(*) = 2 FROM chimeway_signals "
            "WHERE routed_at IS NOT NULL AND id = ANY(%s)",
            ids,
        )
    )
    assert reasons(committed_db, run_id) == before
    assert run_state(committed_db, run_id)[0] == "waiting"
    cw.close()


def test_kill_9_mid_delivery_recovers_with_the_lost_send_recorded(
    workers: Workers, app_env: Any, committed_db: str, tmp_path: Path
) -> None:
    (tmp_path / "block").write_text("")
    env = {"BLOCK_DIR": str(tmp_path), "STUCK_AFTER": "1", "WAIT_SECONDS": "1"}
    doomed = workers.start(**env)
    cw = app_env(**env)
    result = trigger(cw, ["u1"])
    wait_until((tmp_path / "started").exists)
    doomed.stop(signal.SIGKILL)
    (tmp_path / "block").unlink()
    rescuer = workers.start(**env)
    run_id = result.run_ids[0]
    wait_until(lambda: run_state(committed_db, run_id)[0] == "completed", timeout=60)
    # The dead worker's job is found by stalled-job recovery and finishes as a no-op.
    wait_until(
        lambda: scalar(
            committed_db,
            "SELECT count(*) = 0 FROM procrastinate_jobs WHERE status = 'doing' "
            "AND task_name = 'chimeway:deliver'",
        ),
        timeout=30,
    )
    assert rescuer.stop() == 0
    first = result.delivery_ids[0]
    # The killed worker's send is recorded by the takeover as an interrupted attempt (it may
    # or may not have reached the provider); the rescuer's send is attempt 2.
    assert (
        scalar(
            committed_db,
            "SELECT string_agg(outcome || ':' || coalesce(error_class::text, '-'), ',' "
            "ORDER BY attempt_number) FROM chimeway_delivery_attempts WHERE delivery_id = %s",
            first,
        )
        == "failed:unknown,succeeded:-"
    )
    assert (
        scalar(committed_db, "SELECT takeovers FROM chimeway_deliveries WHERE id = %s", first) == 1
    )
    assert (
        scalar(committed_db, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'") == 0
    )
    cw.close()


def delivered(url: str, delivery_id: uuid.UUID) -> bool:
    return (
        scalar(url, "SELECT status::text FROM chimeway_deliveries WHERE id = %s", delivery_id)
        == "succeeded"
    )


def test_killed_connections_are_replaced_and_listen_resumes(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    # Polling every 60 s: a pickup within seconds proves LISTEN/NOTIFY is back.
    worker = workers.start("--poll-interval", "60")
    dbname = scalar(committed_db, "SELECT current_database()")
    with psycopg.connect(committed_db, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        ).fetchone()
    assert killed is not None and killed[0] >= 2  # at least a pool connection and LISTEN
    cw = app_env()
    delivery_id = trigger(cw, ["u1"], key="after").delivery_ids[0]
    wait_until(
        lambda: worker.proc.poll() not in (None, 0) or delivered(committed_db, delivery_id),
        timeout=10,
    )
    assert worker.proc.poll() is None or worker.proc.returncode != 0
    cw.close()


def test_postgres_restart_under_a_running_worker(tmp_path: Path, workers: Workers) -> None:
    from chimeway import embedded, migrations
    from tests.acceptance.app import build

    server = embedded.server(tmp_path / "pgdata")
    url = server.get_uri("postgres")
    migrations.migrate(url)
    workers.url = url
    worker = workers.start("--poll-interval", "60")
    server.stop()
    server.start()
    wait_until(lambda: _answers(url), timeout=30)
    import os

    os.environ["CHIMEWAY_DATABASE_URL"] = url
    try:
        cw = build()
        delivery_id = trigger(cw, ["u1"], key="after-restart").delivery_ids[0]
        wait_until(
            lambda: worker.proc.poll() not in (None, 0) or delivered(url, delivery_id),
            timeout=20,
        )
        assert worker.proc.poll() is None or worker.proc.returncode != 0, worker.output()
        cw.close()
    finally:
        del os.environ["CHIMEWAY_DATABASE_URL"]
        worker.stop(signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def test_sigterm_during_a_burst_loses_no_job(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    first = workers.start("--concurrency", "4", WAIT_SECONDS="1")
    cw = app_env(WAIT_SECONDS="1")
    runs = trigger(cw, [f"u{i}" for i in range(60)]).run_ids
    wait_until(lambda: scalar(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") > 5)
    assert first.stop() == 0
    assert (
        scalar(committed_db, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'") == 0
    )
    workers.start("--concurrency", "4", WAIT_SECONDS="1")
    wait_until(
        lambda: (
            scalar(
                committed_db,
                "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'",
            )
            == len(runs)
        ),
        timeout=90,
    )
    assert sent_twice(committed_db) == 0
    cw.close()


def test_a_backlog_of_one_recipient_triggers_is_sent_once_by_two_workers(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    """Jobs queued one per trigger are taken along by the jobs that run (engine/deliver.py
    gathers a backlog into chunks) while two worker processes race for them: every step of
    every run is sent exactly once."""
    cw = app_env(WAIT_SECONDS="1")
    users = [f"u{i}" for i in range(150)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda u: trigger(cw, [u], key=u), users))
    queued = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:deliver'"
    assert scalar(committed_db, queued) == len(users)
    workers.start("--processes", "2", "--concurrency", "4", WAIT_SECONDS="1")
    completed = "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'"
    wait_until(lambda: scalar(committed_db, completed) == len(users), timeout=120)
    assert scalar(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 3 * len(users)
    assert sent_twice(committed_db) == 0
    cw.close()


def test_processes_option_runs_several_workers_and_stops_cleanly(workers: Workers) -> None:
    parent = workers.start("--processes", "2", new_session=True)
    wait_until(lambda: workers.registered() == 2, timeout=30)
    # The URL reaches the children through the environment, not their command line.
    for child in psutil.Process(parent.proc.pid).children():
        assert workers.url not in " ".join(child.cmdline())
    # A signal to the whole process group (Ctrl-C, systemd) is one stop, not two.
    os.killpg(parent.proc.pid, signal.SIGTERM)
    assert parent.proc.wait(timeout=30) == 0
    assert workers.registered() == 0


def test_second_signal_exits_at_once(workers: Workers, app_env: Any, tmp_path: Path) -> None:
    (tmp_path / "block").write_text("")
    worker = workers.start(BLOCK_DIR=str(tmp_path))
    cw = app_env(BLOCK_DIR=str(tmp_path))
    trigger(cw, ["u1"])
    wait_until((tmp_path / "started").exists)
    worker.proc.send_signal(signal.SIGTERM)  # waits for the blocked send...
    with pytest.raises(subprocess.TimeoutExpired):  # still finishing the send, as it should
        worker.proc.wait(timeout=1)
    code = worker.stop(signal.SIGTERM, timeout=10)  # ...the second one does not
    assert code != 0
    cw.close()


def test_queues_option_limits_what_a_worker_takes(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    workers.start("--queues", "chimeway_delivery,chimeway_progress,chimeway_signals")
    cw = app_env()
    run_id = trigger(cw, ["u1"]).run_ids[0]
    wait_until(lambda: run_state(committed_db, run_id)[0] == "completed", timeout=30)
    # Maintenance jobs are deferred on schedule but wait for a worker of their queue.
    wait_until(
        lambda: scalar(
            committed_db,
            "SELECT count(*) > 0 FROM procrastinate_jobs "
            "WHERE queue_name = 'chimeway_maintenance' AND status = 'todo'",
        )
    )
    assert (
        scalar(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs "
            "WHERE queue_name = 'chimeway_maintenance' AND status <> 'todo'",
        )
        == 0
    )
    cw.close()


def test_a_running_worker_keeps_sending_after_a_migration_changes_columns(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    """A deploy migrates first and restarts its workers after: a worker whose connections
    prepared their statements for the old columns (``SELECT *`` and ``RETURNING *`` of
    deliveries and runs) keeps claiming, recording and advancing runs once a migration
    changed those tables, and sends nothing twice: a statement in autocommit (the claim) is
    prepared again on the spot (store/sessions.py), and a record that fails on one is made
    again, on as many of the pool's connections as still hold one (engine/recording.py),
    never left to the job's retry, which would send again."""
    cw = app_env(WAIT_SECONDS="1")
    worker = workers.start("--concurrency", "8", WAIT_SECONDS="1")
    completed = "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'"
    with ThreadPoolExecutor(4) as pool:  # many of the worker's connections prepare them
        list(pool.map(lambda i: trigger(cw, [f"before{i}"], key=f"before{i}"), range(16)))
    wait_until(lambda: scalar(committed_db, completed) == 16, timeout=60)
    with psycopg.connect(committed_db, autocommit=True) as admin:
        for table in ("chimeway_deliveries", "chimeway_workflow_runs"):
            admin.execute(f"ALTER TABLE {table} ADD COLUMN added_by_a_migration integer".encode())
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: trigger(cw, [f"after{i}"], key=f"after{i}"), range(16)))
    wait_until(lambda: scalar(committed_db, completed) == 32, timeout=60)
    assert scalar(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 3 * 32
    assert sent_twice(committed_db) == 0
    retried = "SELECT count(*) FROM procrastinate_events WHERE type = 'deferred_for_retry'"
    assert scalar(committed_db, retried) == 0, worker.output()
    cw.close()
