"""``chimeway doctor``: is this installation healthy, and if not, what to do."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from chimeway import db, migrations
from chimeway.db import Conn
from chimeway.errors import ChimewayError
from chimeway.store import health


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(
    url: str,
    *,
    heartbeat_within: dt.timedelta = dt.timedelta(minutes=1),
    overdue_grace: dt.timedelta = dt.timedelta(minutes=2),
) -> list[Check]:
    try:
        conn = db.connect(url, autocommit=True)
    except ChimewayError as exc:
        return [Check("database reachable", False, exc.message)]
    with conn:
        checks = [Check("database reachable", True, db.redact_url(url))]
        checks.append(_migrations(conn))
        if not checks[-1].ok:
            return checks
        checks.append(_fetch_plans(conn))
        checks.append(_listen(conn, url))
        workers = health.workers_recent(conn, heartbeat_within)
        checks.append(
            Check(
                "workers seen recently",
                workers > 0,
                f"{workers} worker(s) sent a heartbeat in the last "
                f"{heartbeat_within.total_seconds():.0f} s"
                + ("" if workers else "; start `chimeway worker`"),
            )
        )
        stalled = health.jobs_stalled(conn, heartbeat_within)
        checks.append(
            Check(
                "no stalled jobs",
                stalled == 0,
                f"{stalled} running job(s) belong to dead workers"
                + ("; a live worker retries them" if stalled else ""),
            )
        )
        failed = health.jobs_failed(conn)
        checks.append(
            Check(
                "no failed jobs",
                failed == 0,
                f"{failed} Chimeway job(s) failed for good"
                + ("; see procrastinate_jobs and the worker logs" if failed else ""),
            )
        )
        overdue = health.runs_overdue(conn, overdue_grace)
        checks.append(
            Check(
                "no overdue waits",
                overdue == 0,
                f"{overdue} waiting run(s) are more than "
                f"{overdue_grace.total_seconds():.0f} s past due"
                + ("; are workers running the maintenance queue?" if overdue else ""),
            )
        )
    return checks


def _migrations(conn: Conn) -> Check:
    rows = migrations.status(conn)
    pending = [r for r in rows if r.state != "applied"]
    if pending:
        listed = ", ".join(f"{r.line} {r.version} ({r.state})" for r in pending)
        return Check("migrations current", False, f"{listed}; run `chimeway migrate`")
    return Check("migrations current", True, f"{len(rows)} applied")


def _fetch_plans(conn: Conn) -> Check:
    function = migrations.fetch_function()
    pinned = migrations.fetch_plans_pinned(conn)
    if pinned:
        return Check("job fetch plans per call", True, f"{function} plans every call")
    return Check(
        "job fetch plans per call",
        False,
        f"{function} may reuse a plan made for an empty queue (backlogs then drain at a few "
        "jobs per second); run `chimeway migrate`",
    )


def _listen(conn: Conn, url: str) -> Check:
    channel = f"chimeway_doctor_{uuid.uuid4().hex[:12]}"
    health.listen(conn, channel)
    with db.connect(url, autocommit=True) as other:
        health.notify(other, channel)
    got = list(conn.notifies(timeout=3, stop_after=1))
    ok = bool(got)
    return Check(
        "LISTEN/NOTIFY works",
        ok,
        "a notification arrived"
        if ok
        else "no notification within 3 s: behind a transaction-mode pooler? workers will "
        "fall back to polling",
    )
