"""The due-time waker across real ``chimeway worker`` processes: one leads, the others stand
by; killed, the leader is replaced and the next timer still fires long before the poll."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.acceptance.app import Escalation
from tests.acceptance.conftest import Workers, wait_until

pytestmark = pytest.mark.slow

QUIET = {"MAINTENANCE_CRON": "0 0 1 1 *", "WAIT_SECONDS": "1"}  # no periodic wake-ups


def waker_sessions(url: str) -> dict[int, bool]:
    """Worker process id -> whether its waker leads (holds the lock) or waits for it."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.application_name, l.granted FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND a.datname = current_database()"
            "   AND a.application_name LIKE 'chimeway-waker:%%'"
        ).fetchall()
    return {int(name.split(":")[1]): granted for name, granted in rows}


def test_one_worker_leads_and_a_standby_takes_over_when_it_is_killed(
    workers: Workers, app_env: Any, committed_db: str
) -> None:
    started = [workers.start("--poll-interval", "30", **QUIET) for _ in range(3)]
    pids = {w.proc.pid for w in started}
    sessions = wait_until(
        lambda: (s := waker_sessions(committed_db)) and set(s) == pids and s, timeout=20
    )
    leaders = [pid for pid, granted in sessions.items() if granted]
    assert len(leaders) == 1, sessions  # the others wait on the lock: no stampede

    victim = next(w for w in started if w.proc.pid == leaders[0])
    victim.proc.kill()
    victim.proc.wait(timeout=10)
    left = pids - {victim.proc.pid}
    wait_until(
        lambda: [p for p, g in waker_sessions(committed_db).items() if g and p in left],
        timeout=20,
    )

    cw = app_env(**QUIET)
    cw.trigger(Escalation, {"users": ["u1"]}, tenant_id="t", idempotency_key="k1")
    with psycopg.connect(committed_db, autocommit=True) as conn:

        def reactivated() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM chimeway_workflow_transitions"
                " WHERE reason = 'reactivated_from_wait'"
            ).fetchone()
            return bool(row and row[0])

        # The wait is 1 s and the workers poll every 30 s: only the waker starts it sooner.
        wait_until(reactivated, timeout=12)
    cw.close()
