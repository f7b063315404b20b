"""Procrastinate's job fetch keeps a plan that takes the next due job without touching every
queued one, whatever the table's statistics (research: fetch-plan-collapse.md).

The plan is the one the fetch function actually runs, captured with ``auto_explain`` in the
session that calls it (nested statements, logged as a NOTICE to the client): first the trap
of the collapse (``VACUUM ANALYZE`` of the empty table, then idle fetches, enough for a
connection to cache a generic plan), then with a backlog of due jobs, then with a million
queued timers (seeded server-side), with their statistics stale and fresh. A plan fails when
it scans the table, is generic, or has a node that produces or filters out as many rows as
there are queued jobs (it reads, sorts or steps over every job).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from procrastinate.sql import queries as procrastinate_queries

from chimeway import migrations

pytestmark = pytest.mark.slow

FETCH = procrastinate_queries["fetch_job"]
AUTO_EXPLAIN = [
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_level = notice",
    "SET client_min_messages = notice",
]
IDLE_FETCHES = 6  # the plan cache switches to a generic plan after five
NODE = re.compile(r"\(actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=(\d+)\)")
REMOVED = re.compile(r"Rows Removed by (?:Join )?Filter: (\d+)")


class Fetcher:
    """A connection that fetches as a worker does and keeps the plan of its last fetch."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.notices: list[str] = []
        self.conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        try:
            for statement in AUTO_EXPLAIN:
                self.conn.execute(statement.encode())
        except psycopg.errors.UndefinedFile:
            self.conn.close()
            pytest.skip("auto_explain is not installed on this PostgreSQL server")

    def fetch(self) -> str:
        """Fetch one job; the plan of the fetch's job query (the function's CTE)."""
        self.notices.clear()
        self.conn.execute(FETCH, {"queues": None, "worker_id": None})
        plans = [n for n in self.notices if "WITH candidate AS" in n]
        assert plans, f"no plan captured: {self.notices}"
        return plans[-1]

    def close(self) -> None:
        self.conn.close()


def touched(plan: str) -> int:
    """The most rows one node of the plan produced or filtered out."""
    most = 0
    for line in plan.splitlines():
        node = NODE.search(line)
        if node:
            most = max(most, int(node.group(1)) * int(node.group(2)))
        removed = REMOVED.search(line)
        if removed:
            most = max(most, int(removed.group(1)))
    return most


def problems(plan: str, queued: int) -> list[str]:
    """Why this plan scans or sorts every queued job (nothing: it does not)."""
    found = []
    if "Seq Scan on procrastinate_jobs" in plan:
        found.append("a sequential scan of the job table")
    if touched(plan) >= queued:
        found.append(f"a plan node touches {touched(plan):,} rows for {queued:,} queued jobs")
    if "$1 IS NULL" in plan:
        found.append("a generic plan (the queue filter is not resolved)")
    return found


@pytest.fixture
def admin(committed_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(committed_db, autocommit=True) as conn:
        yield conn


def empty_and_analysed(admin: psycopg.Connection[Any]) -> None:
    admin.execute("DELETE FROM procrastinate_jobs")
    admin.execute("VACUUM ANALYZE procrastinate_jobs")


def queue_due(admin: psycopg.Connection[Any], n: int, first: int = 1) -> None:
    admin.execute(
        """SELECT count(*) FROM unnest(procrastinate_defer_jobs_v1(ARRAY(
             SELECT ROW('chimeway_delivery', 'chimeway:deliver', 0, NULL,
                        'chimeway:deliver:' || g, jsonb_build_object('delivery_id', g::text),
                        NULL)::procrastinate_job_to_defer_v1
             FROM generate_series(%s::int, %s::int + %s::int - 1) g)))""",
        [first, first, n],
    )


def seed_timers(admin: psycopg.Connection[Any], n: int) -> None:
    """``n`` timers due over the next hours, as Chimeway queues them (priority 1), written
    in one statement with triggers off (Procrastinate's events, the notifications)."""
    admin.execute("SET session_replication_role = replica")
    admin.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args,"
        " scheduled_at)"
        " SELECT 'chimeway_progress', 'chimeway:progress', 1, 'chimeway:progress:' || g,"
        "        jsonb_build_object('run_id', g::text),"
        "        now() + interval '1 hour' + g * interval '10 ms'"
        " FROM generate_series(1, %s) g",
        [n],
    )
    admin.execute("SET session_replication_role = DEFAULT")


def test_the_fetch_takes_the_next_job_without_touching_the_others(
    committed_db: str, admin: psycopg.Connection[Any]
) -> None:
    assert migrations.fetch_plans_pinned(admin)
    empty_and_analysed(admin)
    fetcher = Fetcher(committed_db)
    try:
        for _ in range(IDLE_FETCHES):
            fetcher.fetch()
        queue_due(admin, 3000)
        small = fetcher.fetch()
        # While the planner believes the table nearly empty it may read the due jobs once and
        # sort them (a few thousand: about a millisecond); never twice, never all the table.
        assert "Seq Scan on procrastinate_jobs" not in small, small
        assert touched(small) <= 3000, small
        queue_due(admin, 7000, first=3001)
        backlog = fetcher.fetch()
        assert problems(backlog, 10_000) == [], backlog

        admin.execute("DELETE FROM procrastinate_jobs")
        seed_timers(admin, 1_000_000)
        # With the statistics of the empty table the planner guesses that a third of the
        # jobs are due and may walk the priority index over every timer (once, ~0.3 s):
        # only the statistics tell it the timers lie in the future. Autoanalyze refreshes
        # them after the first few dozen changes; then the due-time index is used.
        stale = fetcher.fetch()
        assert "Seq Scan on procrastinate_jobs" not in stale, stale
        assert "$1 IS NULL" not in stale, stale
        assert touched(stale) <= 1_000_000, stale
        admin.execute("ANALYZE procrastinate_jobs")
        fresh = fetcher.fetch()
        assert problems(fresh, 1_000_000) == [], fresh
    finally:
        fetcher.close()


def test_without_custom_plans_the_fetch_collapses(
    committed_db: str, admin: psycopg.Connection[Any]
) -> None:
    """The trap is real, and the check above sees it: with the function's setting removed,
    the cached generic plan joins every queued job with every other."""
    function = migrations.fetch_function()
    admin.execute(f"ALTER FUNCTION {function}(varchar[], bigint) RESET plan_cache_mode".encode())
    assert migrations.fetch_plans_pinned(admin) is False
    empty_and_analysed(admin)
    fetcher = Fetcher(committed_db)
    try:
        for _ in range(IDLE_FETCHES):
            fetcher.fetch()
        queue_due(admin, 3000)
        plan = fetcher.fetch()
    finally:
        fetcher.close()
    assert "a sequential scan of the job table" in problems(plan, 3000)
    assert touched(plan) >= 3000 * 2999  # every job against every other
    assert migrations.migrate(committed_db).pinned == [f"{function}(character varying[],bigint)"]
    assert migrations.fetch_plans_pinned(admin)
