"""Timer precision: N runs wait 1, 2 or 3 s (``--wait``: all the same) after their in-app
step, then advance to email.
Lateness of each advance = the ``reactivated_from_wait`` transition's transaction time minus
the wait's ``due_at``. Runs start at ``--rate`` per second (default 20/s, below the workers'
capacity, so lateness measures timer precision rather than a queue backlog; ``--rate 0``
starts them all at once). Baseline at the same time, on the same workers: N raw Procrastinate
jobs with the same spread of due times (``schedule_at``); lateness = task start minus
``scheduled_at``.

    .venv/bin/python -m bench.timers --wait 1             # the issue's default: 1 s waits
    .venv/bin/python -m bench.timers --wait 1 --no-waker  # workers without the due-time waker
    .venv/bin/python -m bench.timers --wait 1 --rate 0    # all due in the same instant
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import Workers

TARGET_P99_MS = 30


def run_both(
    url: str, n: int, rate: float, timeout: float, wait: int | None
) -> tuple[list[float], list[float]]:
    """Trigger ``n`` timed runs at ``rate`` runs/s (0: all at once) while ``n`` raw jobs are
    scheduled with the same distribution of due times, so both see the same load."""
    start = time.time() + 0.5
    offset = [i / rate if rate else 0.0 for i in range(n)]
    due = {i: start + offset[i] + (wait or random.uniform(1, 3)) for i in range(n)}
    with psycopg.connect(url) as conn:
        for i in range(n):  # one defer per job: each has its own schedule_at
            at = dt.datetime.fromtimestamp(due[i], dt.UTC)
            common.raw_defer(conn, "bench.stamp", [{"kind": "timer", "seq": i}], schedule_at=at)
        conn.commit()
    batch = max(1, round(rate / 5)) if rate else n
    with bench_app.build(url) as cw:
        for first in range(0, n, batch):
            delay = start + offset[first] - time.time()
            if delay > 0:
                time.sleep(delay)
            size = min(batch, n - first)
            cw.trigger(
                bench_app.Timers,
                {"n": size, "prefix": f"b{first}", **({"wait": wait} if wait else {})},
                tenant_id="t",
                idempotency_key=f"timers-{first}",
            )
    common.wait_for(
        lambda: (
            common.scalar(
                url,
                "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'completed'",
                [n],
            )
            and common.scalar(url, "SELECT count(*) >= %s FROM bench_stamps", [n])
        ),
        timeout,
        every=0.2,
        what=f"{n} timed runs and {n} raw scheduled jobs done",
    )
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM created_at - (context->>'due_at')::timestamptz)::float8 "
            "FROM chimeway_workflow_transitions WHERE reason = 'reactivated_from_wait'"
        ).fetchall()
        stamps = conn.execute("SELECT seq, started FROM bench_stamps").fetchall()
    return [r[0] for r in rows], [started - due[seq] for seq, started in stamps]


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=1000, help="timed runs (and raw scheduled jobs)")
    p.add_argument(
        "--rate",
        type=float,
        default=20,
        help="runs started per second (0: all at once, which measures queueing, not timers)",
    )
    p.add_argument("--wait", type=int, choices=[1, 2, 3], help="every wait this long (s)")
    p.add_argument("--timeout", type=float, default=300)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    with common.fresh_database(args.database_url, "timers", args.keep_db) as url:
        common.scalar(url, bench_app.STAMPS_DDL)
        workers = Workers.from_args(url, args, "timers")
        with workers:
            common.note(
                f"{args.n} runs with {args.wait or '1-3'} s waits and {args.n} raw scheduled "
                "jobs, "
                f"{f'{args.rate:g} per second' if args.rate else 'all at once'}"
            )
            chimeway, raw = run_both(url, args.n, args.rate, args.timeout, args.wait)
        results: dict[str, Any] = {
            "chimeway_lateness": common.summary_ms(chimeway),
            "raw_lateness": common.summary_ms(raw),
        }
        c, r = results["chimeway_lateness"], results["raw_lateness"]
        common.table(
            f"Timer lateness, {args.processes} worker processes x concurrency "
            f"{args.concurrency}, poll interval {args.poll_interval:g}s, "
            f"{'no waker' if args.no_waker else 'waker'}, "
            f"{f'{args.rate:g} runs started/s' if args.rate else 'all runs at once'}",
            ["measured", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                ["chimeway: wait due_at -> reactivated", *c.values()],
                ["raw: schedule_at -> task starts", *r.values()],
            ],
        )
        met = c["p99_ms"] < TARGET_P99_MS
        print(
            f"\ntarget p99 < {TARGET_P99_MS} ms: {'met' if met else 'MISSED'} "
            f"(chimeway p99 {c['p99_ms']:.0f} ms, raw p99 {r['p99_ms']:.0f} ms)"
        )
        common.json_line(
            "timers",
            url,
            {
                "n": args.n,
                "processes": args.processes,
                "poll_interval": args.poll_interval,
                "rate": args.rate,
                "wait": args.wait,
                "waker": not args.no_waker,
                **results,
                "target_p99_ms": TARGET_P99_MS,
                "met": met,
            },
        )


if __name__ == "__main__":
    main()
