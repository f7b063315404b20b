"""Workers on two hosts against one PostgreSQL: each worker runs in a network namespace the
test makes (its own address, a veth link to this machine) and reaches the test server
through a forwarder on the link's address, never through loopback. Both take jobs, and
the Chimeway work they share is done once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import hosts
from tests.acceptance.app import Escalation
from tests.acceptance.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow

REASON = hosts.unavailable() or (None if shutil.which("socat") else "socat is not installed")


@pytest.fixture
def two_hosts(committed_db: str, tmp_path: Any) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A ``chimeway worker`` on each of two hosts, connected through the host's link."""
    if REASON:
        pytest.skip(REASON)
    target = conninfo_to_dict(committed_db)
    if str(target.get("host")) not in ("127.0.0.1", "localhost"):
        pytest.skip("the test server is not on loopback")
    port = int(target.get("port") or 5432)
    started: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        made = stack.enter_context(hosts.hosts(2))
        for i, host in enumerate(made):
            stack.enter_context(hosts.forwarder(host.gateway, port, port))
            url = make_conninfo(committed_db, host=host.gateway, application_name=f"host{i}")
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
            env.update(
                CHIMEWAY_DATABASE_URL=url, PYTHONPATH=str(ROOT), MAINTENANCE_CRON="0 0 1 1 *"
            )
            log = (tmp_path / f"host{i}.log").open("wb")
            stack.callback(log.close)
            started.append(
                subprocess.Popen(
                    host.command(
                        sys.executable,
                        "-m",
                        "chimeway.cli",
                        "worker",
                        "--app",
                        "tests.acceptance.app:build",
                        "--concurrency",
                        "3",
                        "--poll-interval",
                        "0.2",
                    ),
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            yield started
        finally:
            for proc in started:  # only the processes this fixture started, by pid
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)


def sessions(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'host%%'"
            " GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_workers_on_two_hosts_share_one_database(
    two_hosts: list[subprocess.Popen[bytes]], committed_db: str, app_env: Any
) -> None:
    wait_until(lambda: set(sessions(committed_db)) == {"host0", "host1"}, timeout=30)
    assert all(proc.poll() is None for proc in two_hosts)
    with psycopg.connect(committed_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t_where (seq int PRIMARY KEY, netns text NOT NULL)")
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY(SELECT ROW('t', 't.where', 0, NULL, NULL,"
            " jsonb_build_object('seq', g), NULL)::procrastinate_job_to_defer_v1"
            " FROM generate_series(1, 60) g))"
        )
    cw = app_env(WAIT_SECONDS="3600", MAINTENANCE_CRON="0 0 1 1 *")
    cw.trigger(
        Escalation, {"users": [f"u{i}" for i in range(30)]}, tenant_id="t", idempotency_key="k"
    )
    with psycopg.connect(committed_db, autocommit=True) as conn:

        def done() -> bool:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM t_where),"
                " (SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'waiting')"
            ).fetchone()
            return row == (60, 30)

        wait_until(done, timeout=60)
        namespaces = dict(conn.execute("SELECT netns, count(*) FROM t_where GROUP BY 1").fetchall())
        sent = conn.execute(
            "SELECT count(*), count(DISTINCT delivery_id) FROM chimeway_delivery_attempts"
        ).fetchone()
    cw.close()
    assert len(namespaces) == 2, namespaces  # both hosts took jobs
    assert os.readlink("/proc/self/ns/net") not in namespaces  # neither is this machine's
    assert sent == (30, 30)  # every in-app step sent once, whichever host took it
