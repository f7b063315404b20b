"""End-to-end throughput: a two-step workflow (in_app -> OnOutcome delivered -> email) for N
recipients, run by ``chimeway worker --processes 2``, against raw Procrastinate no-op jobs on
the very same workers (same processes, concurrency, poll interval), measured before and
after the Chimeway phase in the same run.

    .venv/bin/python -m bench.throughput                   # adapter returns at once
    .venv/bin/python -m bench.throughput --latency-ms 50   # adapter sleeps 50 ms per send
    .venv/bin/python -m bench.throughput --delivery-batch-size 1   # one job per delivery
    .venv/bin/python -m bench.throughput --smtp   # also: the email step over real SMTP

With ``--smtp`` a second Chimeway phase runs the same workflow with its email step sent by
``SmtpAdapter`` to an SMTP server (aiosmtpd) on 127.0.0.1 in this process, which accepts
every message; each send thread of the workers keeps its SMTP connection open across sends.
It is reported beside the first phase, whose adapter answers at once like ``LoggerAdapter``.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import threading
import time
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import CpuMeter, Workers
from chimeway import Notifier

TARGET_RATIO = 0.6


def raw_phase(url: str, workers: Workers, jobs: int, task: str, timeout: float) -> dict[str, Any]:
    """Defer ``jobs`` no-op jobs in one transaction; time from commit to the queue empty."""
    with psycopg.connect(url) as conn:
        common.raw_defer(conn, task, [{"i": i} for i in range(jobs)])
        meter = CpuMeter(workers, url)
        conn.commit()
        start = time.time()
    common.wait_for(
        lambda: common.scalar(
            url, "SELECT count(*) = 0 FROM procrastinate_jobs WHERE task_name = %s", [task]
        ),
        timeout,
        every=0.05,
        what=f"{jobs} {task} jobs done",
    )
    elapsed = time.time() - start
    failed = common.scalar(
        url, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s", [task]
    )
    return {
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "per_s": round(jobs / elapsed, 1),
        "unfinished": failed,
        **meter.read(),
    }


def chimeway_phase(
    url: str,
    workers: Workers,
    n: int,
    timeout: float,
    notifier: type[Notifier] = bench_app.TwoStep,
    **params: Any,
) -> dict[str, Any]:
    """Trigger the two-step workflow for ``n`` recipients in one transaction; time from its
    commit to the last delivery attempt of the last step."""
    done_before = common.scalar(
        url, "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'"
    )
    sent_before = common.scalar(
        url, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'"
    )
    with bench_app.build(url) as cw:
        trigger_started = time.time()
        with cw.pool.connection() as conn:
            cw.trigger(
                notifier,
                {"n": n, "prefix": notifier.key, **params},
                tenant_id="t",
                idempotency_key=f"tp-{notifier.key}",
                conn=conn,
            )
            meter = CpuMeter(workers, url)
            conn.commit()
            start = time.time()
    common.wait_for(
        lambda: common.scalar(
            url,
            "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'completed'",
            [done_before + n],
        ),
        timeout,
        every=0.1,
        what=f"{n} runs completed",
    )
    cpu = meter.read()
    end = common.scalar(
        url, "SELECT extract(epoch FROM max(finished_at))::float8 FROM chimeway_delivery_attempts"
    )
    steps = (
        common.scalar(url, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'")
        - sent_before
    )
    elapsed = end - start
    return {
        "runs": n,
        "steps": steps,
        "trigger_s": round(start - trigger_started, 2),
        "seconds": round(elapsed, 2),
        "per_s": round(steps / elapsed, 1),
        **cpu,
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=5000, help="recipients (2 steps each)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="adapter sleep per send")
    p.add_argument("--raw-task", default="bench.noop", choices=["bench.noop", "bench.noop_async"])
    p.add_argument(
        "--delivery-batch-size",
        type=int,
        default=None,
        help="Chimeway's delivery_batch_size (default: Chimeway's default)",
    )
    p.add_argument(
        "--smtp", action="store_true", help="also run the email step over SMTP (aiosmtpd)"
    )
    p.add_argument("--timeout", type=float, default=600)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    jobs = 2 * args.n  # the same number of jobs as Chimeway steps
    env = {"BENCH_LATENCY_MS": str(args.latency_ms)}
    if args.delivery_batch_size is not None:
        env["BENCH_DELIVERY_BATCH_SIZE"] = str(args.delivery_batch_size)
    mailbox = SmtpSink() if args.smtp else None
    if mailbox is not None:
        env["BENCH_SMTP_PORT"] = str(mailbox.port)
    os.environ.update(env)  # the triggering process plans the same jobs as the workers
    smtp: dict[str, Any] | None = None
    with common.fresh_database(args.database_url, "throughput", args.keep_db) as url:
        workers = Workers.from_args(url, args, "throughput", env=env)
        with workers:
            common.note(f"workers up (log {workers.log}); raw baseline: {jobs} jobs")
            raw_before = raw_phase(url, workers, jobs, args.raw_task, args.timeout)
            common.note(f"raw: {raw_before['per_s']} jobs/s; chimeway: {args.n} runs")
            chimeway = chimeway_phase(url, workers, args.n, args.timeout)
            common.note(f"chimeway: {chimeway['per_s']} steps/s")
            if mailbox is not None:
                smtp = chimeway_phase(
                    url, workers, args.n, args.timeout, bench_app.TwoStepSmtp, with_email=True
                )
                smtp.update(mailbox.report())
                common.note(f"chimeway, email over SMTP: {smtp['per_s']} steps/s")
            common.note("raw again")
            raw_after = raw_phase(url, workers, jobs, args.raw_task, args.timeout)
            rss = {str(pid): round(v / 2**20, 1) for pid, v in workers.peak_rss.items()}
            peak = workers.peak_rss_mb()
        raw = (raw_before["per_s"] + raw_after["per_s"]) / 2
        ratio = chimeway["per_s"] / raw
        batch = args.delivery_batch_size or bench_app.build_defaults()["delivery_batch_size"]
        label = f"chimeway steps (adapter {args.latency_ms:g} ms, batch {batch})"

        def row(name: str, phase: dict[str, Any], work: int) -> list[Any]:
            return [
                name,
                work,
                phase["seconds"],
                phase["per_s"],
                phase["machine_busy"],
                1000 * phase["worker_cpu_s"] / work,
                1000 * phase["postgres_cpu_s"] / work,
                phase.get("wal_records", math.nan) / work,
            ]

        smtp_rows = (
            []
            if smtp is None
            else [
                row(
                    f"chimeway steps, email over SMTP ({smtp['messages']} messages on "
                    f"{smtp['connections']} connections)",
                    smtp,
                    smtp["steps"],
                )
            ]
        )

        common.table(
            f"Throughput: {args.n} two-step runs, {args.processes} worker processes x "
            f"concurrency {args.concurrency}, poll {args.poll_interval:g}s",
            [
                "phase",
                "jobs/steps",
                "seconds",
                "per second",
                "machine busy",
                "worker CPU ms/unit",
                "PG CPU ms/unit",
                "WAL records/unit",
            ],
            [
                row(f"raw {args.raw_task} (before)", raw_before, raw_before["jobs"]),
                row(label, chimeway, chimeway["steps"]),
                *smtp_rows,
                row(f"raw {args.raw_task} (after)", raw_after, raw_after["jobs"]),
            ],
        )
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(f"\nratio chimeway/raw = {ratio:.2f} (target >= {TARGET_RATIO}): {verdict}")
        print(f"worker peak RSS: {peak:.1f} MB (target < 250 MB per process) {rss}")
        print(f"(trigger of {args.n} recipients took {chimeway['trigger_s']} s, not timed)")
        common.json_line(
            "throughput",
            url,
            {
                "n": args.n,
                "latency_ms": args.latency_ms,
                "delivery_batch_size": batch,
                "processes": args.processes,
                "concurrency": args.concurrency,
                "poll_interval": args.poll_interval,
                "chimeway": chimeway,
                "chimeway_smtp": smtp,
                "raw_before": raw_before,
                "raw_after": raw_after,
                "raw_jobs_per_s": round(raw, 1),
                "ratio": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "met": ratio >= TARGET_RATIO,
                "peak_rss_mb": round(peak, 1),
                "peak_rss_mb_by_pid": rss,
            },
        )


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that accepts and counts every message, and counts
    the connections they came on (one per send thread that reuses its connection)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages = 0
        self.sessions: set[int] = set()
        self._lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink._lock:
                    sink.messages += 1
                    sink.sessions.add(id(session))
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        atexit.register(self._controller.stop)

    def report(self) -> dict[str, int]:
        with self._lock:
            return {"messages": self.messages, "connections": len(self.sessions)}


if __name__ == "__main__":
    main()
