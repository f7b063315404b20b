"""Signal wake-up latency on an idle worker (a real ``chimeway worker`` subprocess).

N runs wait (their in-app step was delivered; a one-day wait with an ``OnSignal`` rule to the
email step). Then, one at a time with a gap so the worker is idle each time: ``track_signal``
for one run's recipient, and measured from its commit to the resumed run's email delivery
attempt starting (``delivery_attempts.started_at``, the claim's transaction time), and to
the ``route_signal`` job's transaction (``signals.routed_at``). Interleaved with those, the
baseline on the same worker: a raw Procrastinate job deferred and committed, measured to
the moment the task starts (``time.time()`` at its first line).

    .venv/bin/python -m bench.signal_latency
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import Workers

TARGET_P50_MS = 20
TARGET_P99_MS = 100


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=500, help="signals (and raw jobs)")
    p.add_argument("--gap", type=float, default=0.1, help="seconds between two sends")
    p.add_argument("--timeout", type=float, default=300)
    common.worker_options(p, processes=1)
    args = p.parse_args()
    n = args.n
    with common.fresh_database(args.database_url, "signal", args.keep_db) as url:
        common.scalar(url, bench_app.STAMPS_DDL)
        workers = Workers.from_args(url, args, "signal")
        with workers, bench_app.build(url) as cw, psycopg.connect(url) as raw:
            cw.trigger(bench_app.SignalWait, {"n": n}, tenant_id="t", idempotency_key="sig")
            common.wait_for(
                lambda: common.scalar(
                    url,
                    "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'waiting'",
                    [n],
                ),
                args.timeout,
                every=0.2,
                what=f"{n} runs waiting",
            )
            time.sleep(1.0)  # let the worker go idle
            common.note(f"{n} runs waiting; sending {n} signals and {n} raw jobs")
            committed: dict[str, float] = {}
            raw_committed: dict[int, float] = {}
            for i in range(n):
                cw.track_signal("t", f"u-{i}", bench_app.SIGNAL)
                committed[f"u-{i}"] = time.time()
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
                        [n],
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
        attempt = [started - committed[r] for r, started in attempt_rows]
        routed = [at - committed[r] for r, at in routed_rows]
        baseline = [started - raw_committed[seq] for seq, started in stamp_rows]
        results: dict[str, Any] = {
            "signal_to_attempt": common.summary_ms(attempt),
            "signal_to_route_job": common.summary_ms(routed),
            "raw_defer_to_start": common.summary_ms(baseline),
        }
        common.table(
            f"Signal wake-up latency, {n} signals, idle worker ({args.processes} process x "
            f"concurrency {args.concurrency}), gap {args.gap:g}s",
            ["measured", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [name, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
                for name, s in (
                    ("track_signal commit -> next attempt starts", results["signal_to_attempt"]),
                    ("track_signal commit -> route_signal job tx", results["signal_to_route_job"]),
                    ("raw: defer commit -> task starts", results["raw_defer_to_start"]),
                )
            ],
        )
        s, b = results["signal_to_attempt"], results["raw_defer_to_start"]
        met = s["p50_ms"] < TARGET_P50_MS and s["p99_ms"] < TARGET_P99_MS
        print(
            f"\ntarget p50 < {TARGET_P50_MS} ms and p99 < {TARGET_P99_MS} ms: "
            f"{'met' if met else 'MISSED'}; p50 vs raw: {s['p50_ms'] / b['p50_ms']:.1f}x "
            "(a signal takes two job hops: route_signal, then deliver)"
        )
        common.json_line(
            "signal_latency",
            url,
            {"n": n, "gap_s": args.gap, "processes": args.processes, **results, "met": met},
        )


if __name__ == "__main__":
    main()
