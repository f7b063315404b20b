"""Scale-out across hosts: ``chimeway worker`` processes on several hosts (network namespaces
made here, each with its own address and a veth link to this machine; see bench/hosts.py)
against one PostgreSQL, a private cluster this script starts (stock settings, listening on
loopback and the links' addresses only). Needs root and iproute2.

For 1, 2 and 4 worker processes (``--steps``), spread over the hosts one per host, each
on a fresh database and interleaved over ``--rounds``:

* Chimeway: one trigger of the two-step workflow (in_app -> email) for ``--n`` recipients,
  from its commit to the last attempt (as bench.throughput);
* ``--singles`` one-recipient triggers of the same workflow from 4 threads (each step its
  own job), from the first trigger to the last attempt;
* baseline, on the same workers: ``--raw`` raw Procrastinate no-op jobs deferred in one
  transaction, from the commit to the queue empty.

Printed per phase: steps (jobs) per second, CPU per step of the cluster and of the workers,
the cores each kept busy, and the machine's busy fraction: where the one PostgreSQL (or
this machine) saturates.

    .venv/bin/python -m bench.scaleout
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import psycopg

from bench import bench_app, common, hosts
from bench.common import Workers


class Meter:
    """CPU seconds of the cluster and the workers, and the machine's busy fraction."""

    def __init__(self, cluster: hosts.Cluster, workers: list[Workers]) -> None:
        self.cluster, self.workers = cluster, workers
        self.started = time.time()
        self._pg = cluster.cpu_seconds()
        self._workers = sum(w.cpu_seconds() for w in workers)
        self._machine = psutil.cpu_times()

    def read(self, units: int, seconds: float) -> dict[str, float]:
        now = psutil.cpu_times()
        busy = sum(now) - now.idle - (sum(self._machine) - self._machine.idle)
        pg = self.cluster.cpu_seconds() - self._pg
        workers = sum(w.cpu_seconds() for w in self.workers) - self._workers
        return {
            "pg_cpu_ms_per_unit": round(1000 * pg / units, 3),
            "worker_cpu_ms_per_unit": round(1000 * workers / units, 3),
            "pg_cores": round(pg / seconds, 2),
            "worker_cores": round(workers / seconds, 2),
            "machine_busy": round(busy / (sum(now) - sum(self._machine)), 3),
        }


def singles_phase(
    url: str, cluster: hosts.Cluster, workers: list[Workers], args: Any
) -> dict[str, Any]:
    """``--singles`` one-recipient two-step triggers from 4 threads (the per-step path):
    from the first trigger to the last attempt of the new runs."""
    before = common.scalar(url, "SELECT count(*) FROM chimeway_delivery_attempts")
    steps = 2 * args.singles
    with bench_app.build(url) as cw:
        cw.engine.resize_pool(5)
        meter = Meter(cluster, workers)
        start = time.time()

        def one(i: int) -> None:
            cw.trigger(
                bench_app.TwoStep,
                {"n": 1, "prefix": f"s{i}"},
                tenant_id="t",
                idempotency_key=f"s{i}",
            )

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(args.singles)))
    common.wait_for(
        lambda: common.scalar(
            url, "SELECT count(*) >= %s FROM chimeway_delivery_attempts", [before + steps]
        ),
        args.timeout,
        every=0.1,
        what=f"{steps} single-recipient steps",
    )
    end = common.scalar(
        url, "SELECT extract(epoch FROM max(finished_at))::float8 FROM chimeway_delivery_attempts"
    )
    return {"per_s": round(steps / (end - start), 1), **meter.read(steps, end - start)}


def phase(
    cluster: hosts.Cluster, made: list[hosts.Host], processes: int, args: Any
) -> dict[str, Any]:
    with common.fresh_database(cluster.url, "scaleout") as url:
        dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        used = made[:processes] if processes <= len(made) else made
        per_host = [processes // len(used) + (i < processes % len(used)) for i in range(len(used))]
        workers = [
            Workers(
                cluster.url_for(host.gateway, str(dbname)),
                processes=count,
                concurrency=args.concurrency,
                poll_interval=args.poll_interval,
                log_level=args.log_level,
                label=f"scaleout-{host.name}",
                prefix=host.command(),
                admin_url=url,
            )
            for host, count in zip(used, per_host, strict=True)
            if count
        ]
        try:
            for w in workers:
                w.start()
            common.wait_for(
                lambda: workers[0].registered() >= processes, 60, what="workers registered"
            )
            with psycopg.connect(url) as conn:
                common.raw_defer(conn, "bench.noop", [{"i": i} for i in range(args.raw)])
                meter = Meter(cluster, workers)
                conn.commit()
                start = time.time()
            common.wait_for(
                lambda: common.scalar(
                    url,
                    "SELECT count(*) = 0 FROM procrastinate_jobs WHERE task_name = 'bench.noop'",
                ),
                args.timeout,
                every=0.05,
                what="raw jobs done",
            )
            raw_s = time.time() - start
            raw = {"per_s": round(args.raw / raw_s, 1), **meter.read(args.raw, raw_s)}

            with bench_app.build(url) as cw, cw.pool.connection() as conn:
                cw.trigger(
                    bench_app.TwoStep, {"n": args.n}, tenant_id="t", idempotency_key="s", conn=conn
                )
                meter = Meter(cluster, workers)
                conn.commit()
                start = time.time()
            steps = 2 * args.n
            common.wait_for(
                lambda: common.scalar(
                    url, "SELECT count(*) >= %s FROM chimeway_delivery_attempts", [steps]
                ),
                args.timeout,
                every=0.1,
                what=f"{steps} steps",
            )
            end = common.scalar(
                url,
                "SELECT extract(epoch FROM max(finished_at))::float8"
                " FROM chimeway_delivery_attempts",
            )
            chimeway = {
                "per_s": round(steps / (end - start), 1),
                **meter.read(steps, end - start),
            }
            singles = singles_phase(url, cluster, workers, args) if args.singles else None
            sessions = common.scalar(
                url,
                "SELECT count(DISTINCT client_addr) FROM pg_stat_activity"
                " WHERE datname = current_database() AND client_addr <> '127.0.0.1'",
            )
        finally:
            for w in workers:
                w.stop()
    return {
        "processes": processes,
        "hosts": len(workers),
        "host_addresses_seen": sessions,
        "chimeway": chimeway,
        "singles": singles,
        "raw": raw,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=5000, help="recipients (2 steps each)")
    p.add_argument("--raw", type=int, default=3000, help="raw no-op jobs")
    p.add_argument(
        "--singles", type=int, default=1000, help="one-recipient triggers (0: that phase off)"
    )
    p.add_argument("--steps", default="1,2,4", help="worker process counts")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600)
    common.worker_options(p, processes=1)
    args = p.parse_args()
    reason = hosts.unavailable()
    if reason:
        raise SystemExit(f"cannot make hosts: {reason}")
    counts = [int(c) for c in args.steps.split(",")]
    results = []
    with hosts.hosts(max(counts)) as made, hosts.Cluster(made) as cluster:
        for _ in range(args.rounds):
            for processes in counts:
                common.note(f"{processes} worker process(es) on {min(processes, len(made))} hosts")
                results.append(phase(cluster, made, processes, args))
        report(results, args, str(common.scalar(cluster.url, "SHOW server_version")))
        common.json_line(
            "scaleout", cluster.url, {"n": args.n, "raw": args.raw, "results": results}
        )


def report(results: list[dict[str, Any]], args: Any, version: str) -> None:
    common.table(
        f"Scale-out: workers on separate hosts (network namespaces), one PostgreSQL "
        f"{version}; {args.n} two-step runs ({2 * args.n} steps) and {args.raw} raw jobs per "
        f"phase; concurrency {args.concurrency} per process; this machine has "
        f"{os.cpu_count()} cores for everything",
        [
            "processes",
            "hosts",
            "steps/s",
            "PG ms/step",
            "worker ms/step",
            "PG cores",
            "worker cores",
            "busy",
            "singles steps/s",
            "PG ms/step",
            "raw jobs/s",
            "PG ms/job",
            "busy (raw)",
            "load",
        ],
        [
            [
                r["processes"],
                r["hosts"],
                r["chimeway"]["per_s"],
                r["chimeway"]["pg_cpu_ms_per_unit"],
                r["chimeway"]["worker_cpu_ms_per_unit"],
                r["chimeway"]["pg_cores"],
                r["chimeway"]["worker_cores"],
                r["chimeway"]["machine_busy"],
                r["singles"]["per_s"] if r["singles"] else "-",
                r["singles"]["pg_cpu_ms_per_unit"] if r["singles"] else "-",
                r["raw"]["per_s"],
                r["raw"]["pg_cpu_ms_per_unit"],
                r["raw"]["machine_busy"],
                r["load_avg_1m"],
            ]
            for r in results
        ],
    )
    best = max(results, key=lambda r: r["chimeway"]["per_s"])
    per_step = best["chimeway"]["pg_cpu_ms_per_unit"]
    print(
        f"\nbest: {best['chimeway']['per_s']:,.0f} steps/s with {best['processes']} processes; "
        f"PostgreSQL spends {per_step:.2f} ms of CPU per step there, so one core of a "
        f"dedicated database host carries about {1000 / per_step:,.0f} steps/s of this workload"
    )


if __name__ == "__main__":
    main()
