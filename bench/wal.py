"""WAL per step of the one-recipient path, by relation: N one-recipient two-step triggers
(``bench_app.TwoStep``) from ``--threads`` threads, drained by ``chimeway worker``, on a fresh
database; then ``pg_walinspect`` over the phase's LSN range, own database only (records that
touch its blocks, and their transactions' commits), grouped by the relation of each record's
first block, with the bytes of full-page images (FPI) apart, and the HOT share of each
table's updates (``pg_stat_user_tables``).

FPI depend on checkpoints: the first change of a page after one writes the whole page. With
``--checkpoint`` a CHECKPOINT runs right before the triggers (every page the phase touches
then costs one image: the case after each checkpoint on a busy server); without it, only
the checkpoints the server makes by itself. Use a server with ``full_page_writes = on``.

    .venv/bin/python -m bench.wal --database-url postgresql://postgres@127.0.0.1:5601/postgres
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench import bench_app, common

BY_RELATION = """
WITH r AS (
    SELECT xid, resource_manager, record_type, record_length, fpi_length, block_ref,
           substring(block_ref FROM 'rel \\d+/(\\d+)/') AS db,
           substring(block_ref FROM 'rel \\d+/\\d+/(\\d+)')::oid AS filenode
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), own_xids AS (
    SELECT DISTINCT xid FROM r WHERE db = %(oid)s
), own AS (
    SELECT * FROM r WHERE db = %(oid)s OR (db IS NULL AND xid IN (SELECT xid FROM own_xids))
)
SELECT coalesce(c.relname, CASE WHEN own.filenode IS NULL
                THEN '(' || own.resource_manager || ')' ELSE own.filenode::text END)
       || CASE WHEN %(by_type)s THEN ' ' || own.record_type ELSE '' END AS rel,
       count(*) AS records, sum(record_length) AS bytes, sum(fpi_length) AS fpi
FROM own LEFT JOIN pg_class c ON pg_relation_filenode(c.oid) = own.filenode
GROUP BY 1 ORDER BY 3 DESC
"""
TABLE_STATS = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables
WHERE relname LIKE 'chimeway%%' OR relname LIKE 'procrastinate%%'
"""
COMPLETED = "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'"


def parse_args() -> Any:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=1000, help="one-recipient two-step triggers")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument(
        "--body-bytes",
        type=int,
        default=0,
        help="an HTML body of this many bytes in each email (0: the bench's 9-byte one)",
    )
    p.add_argument("--checkpoint", action="store_true", help="CHECKPOINT before the triggers")
    p.add_argument("--top", type=int, default=20, help="relations shown")
    p.add_argument("--by-type", action="store_true", help="by relation and record type")
    common.worker_options(p, processes=2)
    return p.parse_args()


def table_stats(url: str) -> dict[str, tuple[int, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        time.sleep(2.0)  # let idle backends flush their counters (PostgreSQL 15: within 1 s)
        rows = conn.execute(TABLE_STATS.encode()).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def main() -> None:
    args = parse_args()
    with common.fresh_database(args.database_url, "wal", args.keep_db) as url:
        common.scalar(url, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        oid = str(
            common.scalar(url, "SELECT oid FROM pg_database WHERE datname = current_database()")
        )
        workers = common.Workers(
            url,
            processes=args.processes,
            concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            log_level=args.log_level,
            label="wal",
        )
        with bench_app.build(url) as cw, workers:
            cw.engine.resize_pool(args.threads + 1)
            cw.trigger(
                bench_app.TwoStep, {"n": 1, "prefix": "warm"}, tenant_id="t", idempotency_key="warm"
            )
            common.wait_for(lambda: common.scalar(url, COMPLETED) >= 1, timeout=60, what="warm-up")
            if args.checkpoint:
                common.scalar(url, "CHECKPOINT")
            before = table_stats(url)
            start_lsn = common.scalar(url, "SELECT pg_current_wal_insert_lsn()::text")
            t0 = time.time()

            def one(i: int) -> None:
                cw.trigger(
                    bench_app.TwoStep,
                    {"n": 1, "prefix": f"u{i}", "body_bytes": args.body_bytes},
                    tenant_id="t",
                    idempotency_key=f"u{i}",
                )

            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(one, range(args.n)))
            common.wait_for(
                lambda: common.scalar(url, COMPLETED) >= args.n + 1,
                timeout=600,
                every=0.1,
                what=f"{args.n} runs completed",
            )
            elapsed = time.time() - t0
            end_lsn = common.scalar(url, "SELECT pg_current_wal_insert_lsn()::text")
            after = table_stats(url)
        common.wait_for(
            lambda: common.scalar(
                url, "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", [end_lsn]
            ),
            timeout=10,
            what="WAL flushed",
        )
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                BY_RELATION.encode(),
                {"start": start_lsn, "end": end_lsn, "oid": oid, "by_type": args.by_type},
            ).fetchall()
    steps = 2 * args.n
    total_records = sum(r[1] for r in rows)
    total_bytes = sum(r[2] for r in rows)
    total_fpi = sum(r[3] for r in rows)
    print(
        f"{args.n} units, {steps} steps in {elapsed:.1f} s ({steps / elapsed:.0f} steps/s); "
        f"checkpoint first: {args.checkpoint}; email body {args.body_bytes or 9:,} B"
    )
    print(
        f"WAL per step: {total_bytes / steps:,.0f} B ({total_records / steps:.1f} records), "
        f"of which FPI {total_fpi / steps:,.0f} B; "
        f"without FPI {(total_bytes - total_fpi) / steps:,.0f} B"
    )
    print(f"{'relation':<52} {'rec/step':>8} {'B/step':>8} {'FPI B/step':>10}")
    for rel, records, size, fpi in rows[: args.top]:
        print(f"{rel:<52} {records / steps:8.2f} {size / steps:8.0f} {fpi / steps:10.0f}")
    print(f"{'table':<40} {'ins/unit':>8} {'upd/unit':>8} {'hot/unit':>8} {'del/unit':>8}")
    for rel in sorted(after):
        d = [a - b for a, b in zip(after[rel], before.get(rel, (0, 0, 0, 0)), strict=True)]
        if any(d):
            print(f"{rel:<40} " + " ".join(f"{x / args.n:8.2f}" for x in d))
    common.json_line(
        "wal",
        args.database_url,
        {
            "n": args.n,
            "body_bytes": args.body_bytes,
            "checkpoint": args.checkpoint,
            "wal_bytes_per_step": round(total_bytes / steps),
            "fpi_bytes_per_step": round(total_fpi / steps),
            "records_per_step": round(total_records / steps, 1),
            "by_relation": {rel: round(size / steps) for rel, _, size, _ in rows[:20]},
        },
    )


if __name__ == "__main__":
    main()
