"""The scripts in examples/ run against a fresh migrated database and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg
from werkzeug.serving import make_server

from chimeway.testing import RecordingAdapter, drain
from examples.flask_app import create_app

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env.update(CHIMEWAY_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, f"examples/{name}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode()).fetchall()


def test_plain_psycopg(committed_db: str) -> None:
    out = run_example("plain_psycopg.py", committed_db)
    assert "run: waiting at step 'notice' (waiting_for_step_progression)" in out
    assert "['chimeway.notification.read']" in out
    assert "run: completed (wait_cancelled_by_signal)" in out
    assert (
        "transitions: workflow_started, step_activated, waiting_for_step_progression, "
        "signal_received, workflow_completed" in out
    )
    assert "delivery: in_app succeeded: Sent: the in_app adapter accepted it on attempt 1" in out
    assert rows(committed_db, "SELECT state, terminal_reason FROM chimeway_workflow_runs") == [
        ("completed", "wait_cancelled_by_signal")
    ]
    # The wait was cancelled: the email step never got a delivery.
    assert rows(committed_db, "SELECT channel, status FROM chimeway_deliveries") == [
        ("in_app", "succeeded")
    ]
    assert rows(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == [(1,)]
    # The signal's payload-free trace and its routing.
    assert rows(committed_db, "SELECT routed_at IS NOT NULL FROM chimeway_signals") == [(True,)]


def test_in_transaction(committed_db: str) -> None:
    out = run_example("in_transaction.py", committed_db)
    assert "rollback: orders for ada 0," in out
    assert "not found, new jobs 0" in out
    assert "before commit: new jobs visible to workers 0" in out
    assert "commit: orders for grace 1," in out
    assert "pending, new jobs 1" in out
    assert "sent: Sent: the email adapter accepted it on attempt 1" in out
    # Only the committed order and its notification exist.
    assert rows(committed_db, "SELECT customer_id FROM orders") == [("grace",)]
    assert rows(committed_db, "SELECT count(*) FROM chimeway_events") == [(1,)]
    assert rows(
        committed_db,
        "SELECT n.recipient_id, d.channel, d.status FROM chimeway_deliveries d "
        "JOIN chimeway_notifications n ON n.id = d.notification_id",
    ) == [("grace", "email", "succeeded")]
    assert rows(
        committed_db,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:deliver'",
    ) == [(1,)]


def test_examples_need_a_database_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    for name in ("plain_psycopg.py", "in_transaction.py"):
        done = subprocess.run(
            [sys.executable, f"examples/{name}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert "CHIMEWAY_DATABASE_URL" in done.stderr


def test_comment_digest(committed_db: str) -> None:
    out = run_example("comment_digest.py", committed_db)
    assert "triggered 7 comments: 1 run" in out
    assert "third comment: pending: Not sent yet: held as item 3 of a batch that" in out
    assert "sent 1 email: '7 new comments on your post'" in out
    assert "  grace: Great point\n  alan: I disagree\n  grace: Why?\n  linus: +1" in out
    assert (
        "third comment: digested: Not sent on its own: folded, as item 3 of 7, into the "
        "digest delivery" in out
    )
    assert "digest: succeeded: The digest of 7 notifications" in out
    assert "closed because: window_elapsed" in out
    # One run, one digest delivery sent, six members folded into it.
    assert rows(committed_db, "SELECT count(*) FROM chimeway_workflow_runs") == [(1,)]
    assert rows(
        committed_db, "SELECT status::text, count(*) FROM chimeway_deliveries GROUP BY 1 ORDER BY 1"
    ) == [("digested", 6), ("succeeded", 1)]
    assert rows(committed_db, "SELECT state::text, member_count FROM chimeway_digests") == [
        ("closed", 7)
    ]


def test_the_flask_example(committed_db: str) -> None:
    """A real werkzeug server: the failing request leaves nothing, the committed one
    lands with its job, which a worker (drain) sends."""
    recorder = RecordingAdapter()
    app, cw, pool = create_app(committed_db, adapters={"in_app": recorder})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with httpx.Client(base_url=base) as client:
            failed = client.post(
                "/orders", json={"id": "o1", "customer": "ada", "total": 1, "fail": True}
            )
            assert failed.status_code == 409
            assert rows(committed_db, "SELECT count(*) FROM chimeway_events") == [(0,)]
            placed = client.post("/orders", json={"id": "o2", "customer": "ada", "total": 42})
            assert placed.status_code == 200, placed.text
    finally:
        server.shutdown()
        thread.join(10)
        pool.close()
    assert rows(committed_db, "SELECT id FROM orders") == [("o2",)]
    assert rows(committed_db, "SELECT count(*) FROM chimeway_events") == [(1,)]
    assert rows(committed_db, "SELECT count(*) FROM procrastinate_jobs") == [(1,)]
    with cw:
        drain(cw)
    assert len(recorder.sent) == 1
