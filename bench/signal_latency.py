"""Signal wake-up latency on an idle worker (a real ``chimeway worker`` subprocess).

2N runs wait (their in-app step was delivered; a one-day wait with an ``OnSignal`` rule to
the email step). Then, one at a time with a gap so the worker is idle each time, in turn:

* ``track_signal(..., route="now")``: the run is resumed and its email delivery planned in
  the signal's own transaction; measured from its commit to the email attempt starting
  (``delivery_attempts.started_at``, the claim's transaction time): one job hop;
* ``track_signal(...)`` (``route="job"``, the default): the same, routed by a
  ``route_signal`` job: two job hops (also measured to the job's transaction,
  ``signals.routed_at``);
* the baseline on the same worker: a raw Procrastinate job deferred and committed, measured
  to the moment the task starts (``time.time()`` at its first line).

    .venv/bin/python -m bench.signal_latency
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import Workers

TARGET_P50_MS = 6
TARGET_P99_MS = 15


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=500, help="signals of each kind (and raw jobs)")
    p.add_argument("--gap", type=float, default=0.1, help="seconds between two sends")
    p.add_argument("--timeout", type=float, default=300)
    common.worker_options(p, processes=1)
    args = p.parse_args()
    n = args.n
    with common.fresh_database(args.database_url, "signal", args.keep_db) as url:
        common.scalar(url, bench_app.STAMPS_DDL)
        workers = Workers.from_args(url, args, "signal")
        with workers, bench_app.build(url) as cw, psycopg.connect(url) as raw:
            cw.trigger(bench_app.SignalWait, {"n": 2 * n}, tenant_id="t", idempotency_key="sig")
            common.wait_for(
                lambda: common.scalar(
                    url,
                    "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'waiting'",
                    [2 * n],
                ),
                args.timeout,
                every=0.2,
                what=f"{2 * n} runs waiting",
            )
            time.sleep(1.0)  # let the worker go idle
            common.note(f"{2 * n} runs waiting; sending {2 * n} signals and {n} raw jobs")
            committed: dict[str, float] = {}
            raw_committed: dict[int, float] = {}
            for i in range(n):
                for user, route in ((f"u-{2 * i}", "now"), (f"u-{2 * i + 1}", "job")):
                    cw.track_signal("t", user, bench_app.SIGNAL, route=route)  # type: ignore[arg-type]
                    committed[user] = time.time()
                    time.sleep(args.gap)
                common.raw_defer(raw, "bench.stamp", [{"kind": "raw", "seq": i}])
                raw.commit()
                raw_committed[i] = time.time()
                time.sleep(args.gap)
            common.wait_for(
                lambda: (
                    common.scalar(
                        url,
                        "SELECT count(*) >= %s FROM chimeway_workflow_runs "
                        "WHERE state = 'completed'",
                        [2 * n],
                    )
                    and common.scalar(url, "SELECT count(*) >= %s FROM bench_stamps", [n])
                ),
                args.timeout,
                every=0.2,
                what="all signals and raw jobs processed",
            )
        with psycopg.connect(url) as conn:
            attempt_rows = conn.execute(
                "SELECT d.recipient_id, extract(epoch FROM a.started_at)::float8 "
                "FROM chimeway_delivery_attempts a JOIN chimeway_deliveries d "
                "ON d.id = a.delivery_id WHERE d.channel = 'email'"
            ).fetchall()
            routed_rows = conn.execute(
                "SELECT actor_id, extract(epoch FROM routed_at)::float8 FROM chimeway_signals"
            ).fetchall()
            stamp_rows = conn.execute("SELECT seq, started FROM bench_stamps").fetchall()

        def now_route(user: str) -> bool:
            return int(user.rsplit("-", 1)[1]) % 2 == 0

        now = [started - committed[u] for u, started in attempt_rows if now_route(u)]
        job = [started - committed[u] for u, started in attempt_rows if not now_route(u)]
        routed = [at - committed[u] for u, at in routed_rows if not now_route(u)]
        baseline = [started - raw_committed[seq] for seq, started in stamp_rows]
        results: dict[str, Any] = {
            "route_now_to_attempt": common.summary_ms(now),
            "route_job_to_attempt": common.summary_ms(job),
            "route_job_to_route_job": common.summary_ms(routed),
            "raw_defer_to_start": common.summary_ms(baseline),
        }
        common.table(
            f"Signal wake-up latency, {n} signals of each kind, idle worker ({args.processes} "
            f"process x concurrency {args.concurrency}), gap {args.gap:g}s",
            ["measured", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [name, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
                for name, s in (
                    ('route="now": commit -> next attempt starts', results["route_now_to_attempt"]),
                    ('route="job": commit -> next attempt starts', results["route_job_to_attempt"]),
                    (
                        'route="job": commit -> route_signal job tx',
                        results["route_job_to_route_job"],
                    ),
                    ("raw: defer commit -> task starts", results["raw_defer_to_start"]),
                )
            ],
        )
        s, b = results["route_now_to_attempt"], results["raw_defer_to_start"]
        met = s["p50_ms"] < TARGET_P50_MS and s["p99_ms"] < TARGET_P99_MS
        print(
            f'\ntarget (route="now") p50 < {TARGET_P50_MS} ms and p99 < {TARGET_P99_MS} ms: '
            f"{'met' if met else 'MISSED'}; p50 vs raw: {s['p50_ms'] / b['p50_ms']:.1f}x "
            '(route="now" takes one job hop, the delivery; route="job" two)'
        )
        common.json_line(
            "signal_latency",
            url,
            {"n": n, "gap_s": args.gap, "processes": args.processes, **results, "met": met},
        )


if __name__ == "__main__":
    main()
