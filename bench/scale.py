"""Scale: 1,000,000 waiting runs (10,000 of them due), seeded server-side with
INSERT ... SELECT generate_series, with everything a waiting run has: its event and
notification, its delivered first step (delivery, 3 status transitions, 1 attempt), 3 run
transitions. The waits not yet due end evenly over the next ``--wait-spread-hours`` (24);
those due within ``Maintenance.timer_horizon`` have their timer job in ``procrastinate_jobs``
(a ``chimeway:progress`` job scheduled at the due time), as Chimeway defers it
(``--timer-jobs all``: every wait has one, as before commit 6b330ff). Due runs have no job:
their timers were lost, which is what the sweep (``progress_due_runs``) is for.

Measures, each beside a same-run baseline (no worker runs unless said):
* the plans (EXPLAIN (ANALYZE, BUFFERS)) of the due claim, ``explain``, ``list_traces`` and
  Procrastinate's job fetch at this size, and whether they use the intended indexes;
* ``cw.workflows.explain`` / ``list_traces`` latency vs a raw primary-key SELECT;
* ``progress_due_runs`` runs/s vs the same number of single-row UPDATE transactions;
* Procrastinate's fetch at this size vs on an empty queue;
* ``chimeway worker --processes 2`` draining the 10,000 email deliveries the sweep planned,
  then 10,000 raw no-op jobs, each bounded by ``--drain-seconds``; the workers' peak RSS.

    .venv/bin/python -m bench.scale                 # 1,000,000 runs
    .venv/bin/python -m bench.scale --runs 100000   # quicker
    .venv/bin/python -m bench.scale --timer-jobs all   # a timer job per wait (before 6b330ff)
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import CpuMeter, Workers
from chimeway import Chimeway, Maintenance
from chimeway.testing import seed_waiting_runs, seeded_run_id

TARGET_DUE_PER_S = 1000
TARGET_READ_P99_MS = 5.0
TARGET_RSS_MB = 250

FETCH_CANDIDATE = """
SELECT jobs.id FROM procrastinate_jobs AS jobs
WHERE NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs AS other_jobs
        WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
          AND (other_jobs.status = 'doing'
               OR (other_jobs.status = 'todo'
                   AND (other_jobs.priority > jobs.priority
                        OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)))))
  AND jobs.status = 'todo'
  AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
FOR UPDATE OF jobs SKIP LOCKED"""


def timer_horizon(mode: str) -> dt.timedelta:
    """How far ahead waits get their timer job: Chimeway's ``Maintenance.timer_horizon``."""
    if mode == "all":
        return dt.timedelta(days=36500)
    return getattr(Maintenance(), "timer_horizon", dt.timedelta(days=36500))


def uid(kind: str, i: int) -> uuid.UUID:
    """The id of the ``i``-th seeded run (``kind`` "r")."""
    assert kind == "r"
    return seeded_run_id(i)


def seed(
    url: str, runs: int, due: int, spread: dt.timedelta, horizon: dt.timedelta
) -> list[list[Any]]:
    """The runs, through chimeway.testing.seed_waiting_runs (server-side generate_series)."""
    with Chimeway(url, maintenance=Maintenance(timer_horizon=horizon)) as cw:
        seeded = seed_waiting_runs(
            cw,
            bench_app.SIGNAL_WAIT,
            runs_count=runs,
            due=due,
            spread=spread,
            notification_key="bench_signal",
            contents=bench_app.CONTENT,
            fast=True,
        )
    timings = []
    for step in seeded:
        timings.append(
            [step.table, step.rows, round(step.seconds, 1), round(step.rows / step.seconds)]
        )
        common.note(f"seeded {step.table}: {step.rows:,} rows in {step.seconds:.1f}s")
    return timings


def plans(url: str, run_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the hot queries, printed, with the indexes they use."""
    from chimeway import db

    cases = {
        "runs_due_claim": (
            db.query("runs_due_claim"),
            {"now": None, "limit": 200, "skip": []},
            ["chimeway_workflow_runs_due_idx"],
        ),
        "run_explain": (
            db.query("run_explain"),
            {"id": run_id, "tenant_id": "t"},
            ["chimeway_workflow_runs_pkey"],
        ),
        "transitions_for_run": (
            db.query("transitions_for_run"),
            {"run_id": run_id, "tenant_id": "t", "limit": None},
            ["chimeway_workflow_transitions_run_idx", "chimeway_workflow_runs_pkey"],
        ),
        "procrastinate_fetch_job (candidate)": (FETCH_CANDIDATE, None, []),
    }
    if "runs_to_arm" in db.queries():  # the sweep's timer arming (since 6b330ff)
        cases["runs_to_arm"] = (
            db.query("runs_to_arm"),
            {"horizon": timer_horizon("horizon"), "limit": 500},
            ["chimeway_workflow_runs_due_idx"],
        )
    out = {}
    with psycopg.connect(url) as conn:
        for name, (query, params, expected) in cases.items():
            rows = conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}".encode(), params
            ).fetchone()
            conn.rollback()
            assert rows is not None
            plan = rows[0][0]
            text = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query}".encode(), params).fetchall()
            conn.rollback()
            used = sorted(set(_indexes(plan["Plan"])))
            out[name] = {
                "execution_ms": round(plan["Execution Time"], 3),
                "indexes": used,
                "rows_removed_by_filter": _removed(plan["Plan"]),
                "expected": expected,
                "uses_expected": all(e in used for e in expected) if expected else None,
            }
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) {name}:")
            print("\n".join("    " + r[0] for r in text))
    return out


def _removed(node: dict[str, Any]) -> int:
    own = int(node.get("Rows Removed by Filter", 0)) * int(node.get("Actual Loops", 1))
    return own + sum(_removed(child) for child in node.get("Plans", []))


def _indexes(node: dict[str, Any]) -> list[str]:
    found = [node["Index Name"]] if "Index Name" in node else []
    for child in node.get("Plans", []):
        found += _indexes(child)
    return found


def timed(fn: Any, args_list: list[Any]) -> list[float]:
    out = []
    for args in args_list:
        started = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - started)
    return out


def reads(url: str, runs: int, k: int) -> dict[str, Any]:
    ids = [uid("r", random.randrange(runs)) for _ in range(k)]
    with bench_app.build(url) as cw:
        timed(cw.workflows.explain, [("t", i) for i in ids[:50]])  # warm pool and statements
        explain = timed(cw.workflows.explain, [("t", i) for i in ids])
        traces = timed(cw.workflows.list_traces, [("t", i) for i in ids])

        def raw_select(run_id: uuid.UUID) -> None:
            with cw.pool.connection() as conn:
                conn.execute(
                    "SELECT * FROM chimeway_workflow_runs WHERE id = %s", [run_id]
                ).fetchone()

        raw = timed(raw_select, [(i,) for i in ids])
    return {
        "explain": common.summary_ms(explain),
        "list_traces": common.summary_ms(traces),
        "raw_pk_select": common.summary_ms(raw),
    }


def fetch_latency(url: str, k: int = 20) -> dict[str, Any]:
    """Procrastinate's job fetch (claims the next job), each in a rolled-back transaction."""
    out = []
    with psycopg.connect(url) as conn:
        for _ in range(k):
            started = time.perf_counter()
            conn.execute("SELECT procrastinate_fetch_job_v2(NULL, NULL)").fetchone()
            out.append(time.perf_counter() - started)
            conn.rollback()
    return common.summary_ms(out)


def due_sweep(url: str, due: int, runs: int) -> dict[str, Any]:
    with bench_app.build(url) as cw:
        meter = CpuMeter()
        started = time.perf_counter()
        results = cw.progression.progress_due_runs(limit=due)
        elapsed = time.perf_counter() - started
        cpu = meter.read()
        kinds: dict[str, int] = {}
        for r in results:
            kinds[type(r).__name__] = kinds.get(type(r).__name__, 0) + 1
        # Baseline: as many single-row UPDATE transactions, on other (not due) runs.
        stride = runs // due
        others = [uid("r", i * stride + 1) for i in range(len(results))]
        meter = CpuMeter()
        raw_started = time.perf_counter()
        with cw.pool.connection() as conn:
            for run_id in others:
                conn.execute(
                    "UPDATE chimeway_workflow_runs SET last_transition_at = now() WHERE id = %s",
                    [run_id],
                )
                conn.commit()
        raw_elapsed = time.perf_counter() - raw_started
        raw_cpu = meter.read()
    return {
        "runs": len(results),
        "results": kinds,
        "seconds": round(elapsed, 2),
        "per_s": round(len(results) / elapsed, 1),
        **cpu,
        "raw_updates": len(others),
        "raw_seconds": round(raw_elapsed, 2),
        "raw_per_s": round(len(others) / raw_elapsed, 1),
        "raw_machine_busy": raw_cpu["machine_busy"],
        "raw_postgres_cpu_s": raw_cpu["postgres_cpu_s"],
    }


def drain(
    url: str, workers: Workers, count_sql: str, total: int, seconds: float, params: Any = None
) -> dict:
    """Let the workers run until ``count_sql`` reaches ``total`` or ``seconds`` pass."""
    meter = CpuMeter(workers)
    started = time.time()
    done = 0
    while time.time() - started < seconds:
        done = int(common.scalar(url, count_sql, params) or 0)
        if done >= total:
            break
        time.sleep(0.25)
    elapsed = time.time() - started
    return {
        "done": done,
        "of": total,
        "seconds": round(elapsed, 1),
        "per_s": round(done / elapsed, 1),
        **meter.read(),
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--due", type=int, default=10_000)
    p.add_argument("--lookups", type=int, default=1000, help="explain/list_traces calls")
    p.add_argument(
        "--wait-spread-hours",
        type=float,
        default=24,
        help="the waits not yet due end evenly over this many hours",
    )
    p.add_argument(
        "--timer-jobs",
        choices=["horizon", "all"],
        default="horizon",
        help="queue a timer job for waits due within Maintenance.timer_horizon (what Chimeway "
        "does since 6b330ff) or for every wait (what it did before)",
    )
    p.add_argument("--drain-seconds", type=float, default=60, help="bound of each worker phase")
    p.add_argument("--no-worker", action="store_true", help="skip the worker phase")
    common.worker_options(p, processes=2)
    args = p.parse_args()
    results: dict[str, Any] = {"runs": args.runs, "due": args.due}
    with common.fresh_database(args.database_url, "scale", args.keep_db) as url:
        empty_fetch = fetch_latency(url)
        common.note(f"seeding {args.runs:,} waiting runs ({args.due:,} due)")
        horizon = timer_horizon(args.timer_jobs)
        results["timer_jobs"] = args.timer_jobs
        results["wait_spread_hours"] = args.wait_spread_hours
        seeded = seed(url, args.runs, args.due, dt.timedelta(hours=args.wait_spread_hours), horizon)
        results["queued_timer_jobs"] = int(
            common.scalar(url, "SELECT count(*) FROM procrastinate_jobs") or 0
        )
        common.table(
            "Seeding (INSERT ... SELECT generate_series)",
            ["table", "rows", "seconds", "rows/s"],
            seeded,
        )
        results["seed"] = seeded
        results["database_mb"] = round(
            common.scalar(url, "SELECT pg_database_size(current_database())") / 2**20
        )
        results["plans"] = plans(url, uid("r", random.randrange(args.runs)))
        results["fetch_empty_queue"] = empty_fetch
        results["fetch_at_scale"] = fetch_latency(url)
        common.note("explain / list_traces latency")
        results["reads"] = reads(url, args.runs, args.lookups)
        # The sweep runs before any worker starts: a worker's periodic sweep would take the
        # due runs itself.
        common.note(f"progress_due_runs on {args.due:,} due runs (no worker running)")
        sweep = due_sweep(url, args.due, args.runs)
        results["progress_due_runs"] = sweep
        planned_by = common.scalar(url, "SELECT now()")
        if not args.no_worker:
            with Workers.from_args(url, args, "scale") as workers:
                common.note(f"worker: draining the {sweep['runs']:,} email deliveries planned")
                results["worker_drain"] = drain(
                    url,
                    workers,
                    "SELECT count(*) FROM chimeway_deliveries WHERE channel = 'email' "
                    "AND status = 'succeeded' AND created_at <= %s",
                    sweep["runs"],
                    args.drain_seconds,
                    [planned_by],
                )
                results["fetch_during_drain"] = fetch_latency(url, 5)
                # What the bound left undone must not compete with the raw baseline.
                common.scalar(
                    url,
                    "DELETE FROM procrastinate_jobs "
                    "WHERE queue_name = 'chimeway_delivery' AND status = 'todo'",
                )
                with psycopg.connect(url) as conn:
                    common.raw_defer(conn, "bench.noop", [{"i": i} for i in range(args.due)])
                common.note(f"worker: draining {args.due:,} raw no-op jobs")
                results["raw_drain"] = drain(
                    url,
                    workers,
                    f"SELECT {args.due} - count(*) FROM procrastinate_jobs "
                    "WHERE task_name = 'bench.noop'",
                    args.due,
                    args.drain_seconds,
                )
                results["fetch_during_raw_drain"] = fetch_latency(url, 5)
                results["peak_rss_mb"] = round(workers.peak_rss_mb(), 1)
        report(results, args)
        common.json_line("scale", url, results)


def report(r: dict[str, Any], args: Any) -> None:
    reads_, sweep = r["reads"], r["progress_due_runs"]
    common.table(
        f"Reads at {args.runs:,} runs ({args.lookups:,} random runs)",
        ["call", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [[name, *reads_[name].values()] for name in ("explain", "list_traces", "raw_pk_select")],
    )
    common.table(
        "Plans at this size",
        ["query", "execution ms", "rows removed by filter", "indexes used", "intended"],
        [
            [
                name,
                v["execution_ms"],
                v["rows_removed_by_filter"],
                ", ".join(v["indexes"]) or "-",
                "n/a" if v["uses_expected"] is None else v["uses_expected"],
            ]
            for name, v in r["plans"].items()
        ],
    )
    common.table(
        "Procrastinate job fetch (procrastinate_fetch_job_v2, rolled back)",
        ["when", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            [name, *r[key].values()]
            for name, key in (
                ("empty queue", "fetch_empty_queue"),
                (f"{r['queued_timer_jobs']:,} timer jobs queued", "fetch_at_scale"),
                ("while workers drain chimeway steps", "fetch_during_drain"),
                ("while workers drain raw jobs", "fetch_during_raw_drain"),
            )
            if key in r
        ],
    )
    rows = [
        ["progress_due_runs", sweep["runs"], sweep["seconds"], sweep["per_s"]],
        [
            "raw single-row UPDATE transactions",
            sweep["raw_updates"],
            sweep["raw_seconds"],
            sweep["raw_per_s"],
        ],
    ]
    if "worker_drain" in r:
        w, raw = r["worker_drain"], r["raw_drain"]
        rows += [
            ["worker: email steps (chimeway)", w["done"], w["seconds"], w["per_s"]],
            ["worker: raw no-op jobs", raw["done"], raw["seconds"], raw["per_s"]],
        ]
    common.table(f"Throughput at {args.runs:,} runs", ["what", "done", "seconds", "per s"], rows)
    verdicts = {
        f"progress_due_runs >= {TARGET_DUE_PER_S}/s": sweep["per_s"] >= TARGET_DUE_PER_S,
        f"explain p99 < {TARGET_READ_P99_MS} ms": reads_["explain"]["p99_ms"] < TARGET_READ_P99_MS,
        f"list_traces p99 < {TARGET_READ_P99_MS} ms": reads_["list_traces"]["p99_ms"]
        < TARGET_READ_P99_MS,
        "plans use the intended indexes": all(
            v["uses_expected"] is not False for v in r["plans"].values()
        ),
    }
    if "peak_rss_mb" in r:
        verdicts[f"worker peak RSS {r['peak_rss_mb']} MB < {TARGET_RSS_MB} MB"] = (
            r["peak_rss_mb"] < TARGET_RSS_MB
        )
    print()
    for name, ok in verdicts.items():
        print(f"{'met   ' if ok else 'MISSED'}  {name}")
    r["verdicts"] = verdicts
    r["sweep_vs_raw"] = round(sweep["per_s"] / max(sweep["raw_per_s"], 1e-9), 3)
    print(f"progress_due_runs vs raw single-row updates: {r['sweep_vs_raw']:.2f}")


if __name__ == "__main__":
    main()
