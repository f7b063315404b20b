"""The delivery path keeps plans that use its indexes, whatever the tables' statistics.

Its connections keep one generic plan per statement and plan no sequential scan
(``chimeway.engine.connections``). This runs the path (claims, records, and the progression
they carry: a branch on the outcome, a retry, a bounce, a wait started, a stop and a
completion) on tables analysed while empty, the trap in which a generic plan would read a
table whole for as long as its connection lives, and reads every plan the path's
statements ran with (``auto_explain`` in those very sessions, nested statements included,
sent to the client as notices): none may read a table whole. (On connections left as they
are, this test fails: even custom plans read these tiny tables whole.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from chimeway import Bounced, Chimeway, OnOutcome, Step, Stop, Temporary, WaitUntil, Workflow
from chimeway.db import Conn
from chimeway.engine import connections
from chimeway.testing import RecordingAdapter
from tests.integration.conftest import Recorders
from tests.integration.notifiers import WithWorkflow

READ = "chimeway.notification.read"
AUTO_EXPLAIN = [
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_level = notice",
    "SET client_min_messages = notice",
]
SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")

FLOW = Workflow(
    "plans",
    1,
    [
        Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="email")]),
        Step(
            "email",
            "email",
            [
                OnOutcome(outcome="bounced", to_step="sms"),
                WaitUntil(delay=600, to_step="sms", cancel_signals=[READ]),
            ],
        ),
        Step("sms", "sms", [Stop(outcome="delivered")]),
    ],
)


class Plans:
    """The plans of every statement run on the delivery pool's connections."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def configure(self, conn: Conn) -> None:
        connections.tune_for_delivery(conn)
        conn.add_notice_handler(lambda d: self.seen.append(d.message_primary or ""))
        conn.autocommit = True
        try:
            for statement in AUTO_EXPLAIN:
                conn.execute(statement.encode())
        except psycopg.errors.UndefinedFile:
            pytest.fail("auto_explain is not installed on this PostgreSQL server")
        finally:
            conn.autocommit = False

    def statements(self) -> list[str]:
        return [p for p in self.seen if "Query Text:" in p]


def watched(cw: Chimeway, plans: Plans) -> None:
    """Put the delivery pool under ``plans``' watch (its settings, its statements' plans)."""
    cw.engine._deliver_pool = ConnectionPool(
        cw.database_url,
        min_size=1,
        max_size=4,
        open=True,
        configure=plans.configure,
        kwargs={"prepare_threshold": 0},
    )


def deliver_all(cw: Chimeway, url: str) -> int:
    """Deliver every pending delivery, round after round; how many sends were made."""
    sends = 0
    for _ in range(10):
        with psycopg.connect(url) as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM chimeway_deliveries"
                    " WHERE status IN ('pending', 'failed') ORDER BY created_at"
                )
            ]
            conn.execute("UPDATE chimeway_deliveries SET retry_at = now() WHERE retry_at > now()")
        if not ids:
            return sends
        for delivery_id in ids:
            sends += cw.deliver(delivery_id).action != "skipped"
    return sends


def test_the_delivery_path_never_reads_a_table_whole(
    make_cw: Callable[..., Chimeway], committed_db: str, adapters: Recorders
) -> None:
    adapters["email"] = RecordingAdapter([Temporary("try again"), None, Bounced("no such user")])
    cw: Any = make_cw(notifiers=[WithWorkflow(FLOW)])
    with psycopg.connect(committed_db, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'chimeway_%'"
            )
        ]
        for table in tables:  # the trap: statistics that say every table is empty
            conn.execute(f"VACUUM ANALYZE {table}".encode())
    plans = Plans()
    watched(cw, plans)

    cw.trigger("with_workflow", {"users": ["u1", "u2"]}, tenant_id="t", idempotency_key="k")
    sends = deliver_all(cw, committed_db)

    # Both notices sent; one email sent at once (its run waits), the other retried, then
    # bounced: its run goes on to sms and stops there.
    assert sends == 6
    assert len(adapters["email"].requests) == 3
    assert len(adapters["sms"].sent) == 1
    with psycopg.connect(committed_db) as conn:
        states = sorted(r[0] for r in conn.execute("SELECT state FROM chimeway_workflow_runs"))
    assert states == ["stopped", "waiting"]
    ran = plans.statements()
    assert len(ran) >= 20, ran
    whole = sorted({m for p in ran for m in SEQ_SCAN.findall(p)})
    assert whole == [], "\n\n".join(p for p in ran if SEQ_SCAN.search(p))


def test_the_delivery_pool_plans_once_and_never_whole_tables(cw: Chimeway) -> None:
    with cw.engine.deliver_pool.connection() as conn:
        settings = conn.execute(
            "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')"
        ).fetchone()
    with cw.engine.pool.connection() as conn:
        general = conn.execute(
            "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')"
        ).fetchone()
    assert settings == ("force_generic_plan", "off")
    assert general == ("auto", "on")  # the pool your own queries use is left alone
