"""Signal routing throughput, routed by real ``chimeway worker`` processes; each signal is for
one of as many waiting runs (a one-day wait with an ``OnSignal`` rule to the email step).

* live: signals offered at ``--rate`` per second for ``--seconds`` from ``--threads``
  threads (``track_signal``, one transaction each); measured: the rate actually offered
  and signals routed per second, from the first signal's commit to the last ``routed_at``
  (the routing transaction's time). On a small machine the producers share the CPU with
  the workers and the database, so this is bounded by what they manage to offer.
* backlog: the same number of signals written while no worker runs, then the workers
  started: the routing capacity, from the workers' registration to the last signal routed
  (polled every 50 ms).

``route_signal`` jobs take the other waiting signals along, so a burst costs a few jobs, not
one each. Baselines in the same run, on the same workers: as many raw Procrastinate jobs
deferred one per transaction, live at the same rate and as a backlog, drained (what one job
per signal would cost at least), timed the same way (live: to the last task start).

    .venv/bin/python -m bench.signal_routing                 # 1,000/s for 5 s
    .venv/bin/python -m bench.signal_routing --route now     # routed in the signal's transaction
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import CpuMeter, Workers

TARGET_PER_S = 1000


def paced(n: int, rate: float, threads: int, send: Any) -> tuple[float, float]:
    """Call ``send(i)`` for i in 0..n-1 at ``rate`` per second overall, spread over
    ``threads``; the first and last commit times."""
    start = time.time() + 0.2
    first_last = [float("inf"), 0.0]
    lock = threading.Lock()

    def worker(part: range) -> None:
        for i in part:
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            send(i)
            done = time.time()
            with lock:
                first_last[0] = min(first_last[0], done)
                first_last[1] = max(first_last[1], done)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [range(t, n, threads) for t in range(threads)]))
    return first_last[0], first_last[1]


def waiting(url: str, args: Any, prefixes: list[str]) -> None:
    """``n`` waiting runs per prefix (recipients ``<prefix>-<i>``)."""
    n = int(args.rate * args.seconds)
    with bench_app.build(url) as cw:
        for prefix in prefixes:
            cw.trigger(
                bench_app.SignalWait,
                {"n": n, "prefix": prefix},
                tenant_id="t",
                idempotency_key=f"routing-{prefix}",
            )
    common.wait_for(
        lambda: common.scalar(
            url,
            "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'waiting'",
            [n * len(prefixes)],
        ),
        args.timeout,
        every=0.2,
        what=f"{n * len(prefixes)} runs waiting",
    )


def track(url: str, args: Any, prefix: str, rate: float) -> tuple[float, float]:
    """Signals for every ``<prefix>-<i>`` at ``rate`` per second; first and last commit."""
    n = int(args.rate * args.seconds)
    with bench_app.build(url) as cw:
        cw.engine.resize_pool(args.threads + 1)
        return paced(
            n,
            rate,
            args.threads,
            lambda i: cw.track_signal("t", f"{prefix}-{i}", bench_app.SIGNAL, route=args.route),
        )


def routed(url: str, args: Any, prefix: str) -> tuple[float, float, int]:
    """When the first and last of these signals were routed, in how many transactions."""
    common.wait_for(
        lambda: common.scalar(
            url,
            "SELECT count(*) = 0 FROM chimeway_signals WHERE routed_at IS NULL"
            " AND actor_id LIKE %s",
            [f"{prefix}-%"],
        ),
        args.timeout,
        every=0.05,
        what="signals routed",
    )
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(routed_at))::float8,"
            " extract(epoch FROM max(routed_at))::float8, count(DISTINCT routed_at)"
            " FROM chimeway_signals WHERE actor_id LIKE %s",
            [f"{prefix}-%"],
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def raw_defer(url: str, args: Any, kind: str, rate: float) -> tuple[float, float]:
    """Raw jobs at ``rate`` per second, one transaction each, a connection per thread."""
    n = int(args.rate * args.seconds)
    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []

    def send(i: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(url)
            opened.append(conn)
        common.raw_defer(conn, "bench.stamp", [{"kind": kind, "seq": i}])
        conn.commit()

    try:
        return paced(n, rate, args.threads, send)
    finally:
        for conn in opened:
            conn.close()


def raw_done(url: str, args: Any, kind: str) -> tuple[float, float]:
    n = int(args.rate * args.seconds)
    common.wait_for(
        lambda: common.scalar(
            url, "SELECT count(*) >= %s FROM bench_stamps WHERE kind = %s", [n, kind]
        ),
        args.timeout,
        every=0.05,
        what=f"{n} raw jobs done",
    )
    row = common.scalar(
        url, "SELECT ARRAY[min(started), max(started)] FROM bench_stamps WHERE kind = %s", [kind]
    )
    return row[0], row[1]


def row(
    what: str,
    n: int,
    offered: tuple[float, float] | None,
    first: float,
    last: float,
    transactions: int | None,
    cpu: dict[str, float],
) -> dict[str, Any]:
    return {
        "what": what,
        "n": n,
        "offered_per_s": round(n / (offered[1] - offered[0]), 1) if offered else None,
        "seconds": round(last - first, 2),
        "per_s": round(n / (last - first), 1),
        "routing_transactions": transactions,
        **cpu,
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--rate", type=float, default=1000, help="signals offered per second")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--route", choices=["job", "now"], default="job")
    p.add_argument("--timeout", type=float, default=300)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    n = int(args.rate * args.seconds)
    rows = []
    with common.fresh_database(args.database_url, "routing", args.keep_db) as url:
        common.scalar(url, bench_app.STAMPS_DDL)
        with Workers.from_args(url, args, "routing-live") as workers:
            waiting(url, args, ["live", "backlog"])
            time.sleep(1.0)
            common.note(f"live: {n} signals at {args.rate:g}/s")
            meter = CpuMeter(workers, url)
            offered = track(url, args, "live", args.rate)
            first, last, tx = routed(url, args, "live")
            rows.append(
                row(
                    f'live: track_signal(route="{args.route}")',
                    n,
                    offered,
                    offered[0],
                    last,
                    tx,
                    meter.read(),
                )
            )
            common.note(f"live: {n} raw jobs at {args.rate:g}/s")
            meter = CpuMeter(workers, url)
            offered = raw_defer(url, args, "live", args.rate)
            first, last = raw_done(url, args, "live")
            rows.append(
                row(
                    "live: raw job per transaction",
                    n,
                    offered,
                    offered[0],
                    last,
                    None,
                    meter.read(),
                )
            )
        common.note(f"backlog: {n} signals and {n} raw jobs written with no worker running")
        track(url, args, "backlog", rate=1e9)
        with Workers.from_args(url, args, "routing-backlog") as workers:
            meter = CpuMeter(workers, url)
            first, last, tx = routed(url, args, "backlog")
            rows.append(row("backlog: signals routed", n, None, first, last, tx, meter.read()))
        raw_defer(url, args, "backlog", rate=1e9)
        with Workers.from_args(url, args, "routing-raw") as workers:
            meter = CpuMeter(workers, url)
            first, last = raw_done(url, args, "backlog")
            rows.append(row("backlog: raw jobs drained", n, None, first, last, None, meter.read()))
        common.table(
            f"Signal routing ({args.route}), {n:,} signals, {args.threads} producer threads, "
            f"{args.processes} worker processes x concurrency {args.concurrency}",
            ["what", "offered/s", "s", "done/s", "routing tx", "PG CPU s", "worker CPU s"],
            [
                [
                    r["what"],
                    r["offered_per_s"] or "-",
                    r["seconds"],
                    r["per_s"],
                    r["routing_transactions"] or "-",
                    r["postgres_cpu_s"],
                    r["worker_cpu_s"],
                ]
                for r in rows
            ],
        )
        live, backlog = rows[0], rows[2]
        met = backlog["per_s"] >= TARGET_PER_S and live["per_s"] >= 0.95 * live["offered_per_s"]
        print(
            f"\nrouting capacity {backlog['per_s']:,.0f} signals/s (target >= {TARGET_PER_S:,}), "
            f"live routing kept up with the {live['offered_per_s']:,.0f}/s offered: "
            f"{'met' if met else 'MISSED'}; raw jobs drained at {rows[3]['per_s']:,.0f}/s"
        )
        common.json_line(
            "signal_routing", url, {"rows": rows, "target_per_s": TARGET_PER_S, "met": met}
        )


if __name__ == "__main__":
    main()
