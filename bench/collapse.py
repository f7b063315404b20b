"""The fetch-plan collapse, reproduced: without and with custom plans for Procrastinate's job
fetch (research: fetch-plan-collapse.md), in the same run.

Each phase has a fresh database. ``unpinned`` removes the setting ``chimeway migrate`` gives
the fetch function (``plan_cache_mode = force_custom_plan``), as before it existed;
``pinned`` keeps it. Then, as an idle installation does: ``VACUUM ANALYZE`` of the empty job
table, workers idle for ``--idle`` seconds (each connection polls enough to cache a generic
plan), and ``--n`` single-recipient two-step triggers from 4 threads. Measured from the
first trigger to the last attempt (or to ``--window`` seconds, when the backlog does not
drain in time): steps per second, steps finished in each 5-second slice (a steady drain or
a collapse), and PostgreSQL CPU per step.

    .venv/bin/python -m bench.collapse                  # unpinned, pinned, unpinned, pinned
    .venv/bin/python -m bench.collapse --rounds 1
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import CpuMeter, Workers
from chimeway import migrations

SLICE_S = 5


def phase(url: str, args: Any, pinned: bool) -> dict[str, Any]:
    function = migrations.fetch_function()
    with psycopg.connect(url, autocommit=True) as conn:
        if not pinned:
            conn.execute(
                f"ALTER FUNCTION {function}(varchar[], bigint) RESET plan_cache_mode".encode()
            )
        conn.execute("VACUUM ANALYZE procrastinate_jobs")
    steps = 2 * args.n
    with Workers.from_args(url, args, "collapse-pinned" if pinned else "collapse-unpinned") as w:
        time.sleep(args.idle)  # idle polls: the plan cache's trap is set
        meter = CpuMeter(w, url)
        start = time.time()
        with bench_app.build(url) as cw:
            cw.engine.resize_pool(5)

            def one(i: int) -> None:
                cw.trigger(
                    bench_app.TwoStep,
                    {"n": 1, "prefix": f"s{i}"},
                    tenant_id="t",
                    idempotency_key=f"s{i}",
                )

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, range(args.n)))
        triggered = time.time() - start
        try:
            common.wait_for(
                lambda: common.scalar(
                    url,
                    "SELECT count(*) >= %s FROM chimeway_delivery_attempts",
                    [steps],
                ),
                max(args.window - (time.time() - start), 1),
                every=0.2,
                what=f"{steps} steps",
            )
            drained = True
        except TimeoutError:
            drained = False
        cpu = meter.read()
        with psycopg.connect(url) as conn:
            finished = [
                r[0]
                for r in conn.execute(
                    "SELECT extract(epoch FROM finished_at)::float8 - %s"
                    " FROM chimeway_delivery_attempts ORDER BY 1",
                    [start],
                ).fetchall()
            ]
    elapsed = finished[-1] if drained and finished else time.time() - start
    slices = [0] * (int(elapsed // SLICE_S) + 1)
    for at in finished:
        slices[min(int(at // SLICE_S), len(slices) - 1)] += 1
    return {
        "variant": "pinned" if pinned else "unpinned",
        "steps": len(finished),
        "drained": drained,
        "seconds": round(elapsed, 1),
        "triggers_seconds": round(triggered, 1),
        "steps_per_s": round(len(finished) / elapsed, 1),
        "per_slice": [round(n / SLICE_S, 1) for n in slices],
        "pg_cpu_ms_per_step": round(cpu["postgres_cpu_s"] / max(len(finished), 1) * 1000, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=2000, help="single-recipient triggers per phase")
    p.add_argument("--idle", type=float, default=8.0, help="seconds the workers idle first")
    p.add_argument("--window", type=float, default=120.0, help="give up on a phase after")
    p.add_argument("--rounds", type=int, default=2)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    results = []
    for _ in range(args.rounds):
        for pinned in (False, True):
            name = "collapse_pinned" if pinned else "collapse_unpinned"
            with common.fresh_database(args.database_url, name, args.keep_db) as url:
                common.note(f"{'pinned' if pinned else 'unpinned'}: {args.n} triggers")
                results.append(phase(url, args, pinned))
    common.table(
        f"Collapse reproduction: VACUUM ANALYZE, workers idle {args.idle:g}s, {args.n} "
        f"single-recipient two-step triggers ({args.processes} processes x concurrency "
        f"{args.concurrency})",
        ["fetch plans", "steps", "drained", "s", "steps/s", "PG CPU ms/step", "load"],
        [
            [
                r["variant"],
                r["steps"],
                r["drained"],
                r["seconds"],
                r["steps_per_s"],
                r["pg_cpu_ms_per_step"],
                r["load_avg_1m"],
            ]
            for r in results
        ],
    )
    print(f"\nsteps/s in each {SLICE_S}-second slice:")
    for r in results:
        print(f"  {r['variant']:<9} {' '.join(f'{v:g}' for v in r['per_slice'])}")
    common.json_line("collapse", args.database_url, {"n": args.n, "results": results})


if __name__ == "__main__":
    main()
