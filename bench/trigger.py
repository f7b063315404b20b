"""Trigger throughput, in this process (no worker): one trigger fanning out to 10,000
recipients (two-step workflow, and plain in-app deliveries), and 10,000 single-recipient
triggers from 8 threads; rows and jobs written per second (a fan-out's deliveries share
``deliver_many`` jobs of ``delivery_batch_size``). The single-recipient triggers run twice:
in a tenant without policy (the one-statement trigger) and in a tenant with a default opt-in
(some policy can apply: planning's path, same rows); for each, the round trips to
PostgreSQL per trigger on the trigger's connection (libpq's trace: a simple Query or an
extended-protocol Sync is one round trip). Baselines in the same run: raw
psycopg inserts of the same number of rows (unnest with text or binary parameters, and COPY),
Procrastinate's ``batch_defer`` of the same number of jobs, and 10,000 raw "insert one row +
defer one job" transactions from 8 threads, then again with each row padded to the WAL a
trigger writes per commit, the triggers in the app's own transactions (its row, the trigger,
commit: what raw's transactions do), and each pair again with both sides' commits not
waiting for their WAL flush (``synchronous_commit = off`` on their sessions: a diagnosis of
how much of the gap the flush makes, never a setting to run with). For every row, CPU per
operation of this process (the client) and of the PostgreSQL server.

    .venv/bin/python -m bench.trigger
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from bench import bench_app, common

TARGET_FANOUT = 3000  # recipients/s

COUNTED = """
SELECT (SELECT count(*) FROM chimeway_events) + (SELECT count(*) FROM chimeway_notifications)
     + (SELECT count(*) FROM chimeway_workflow_runs)
     + (SELECT count(*) FROM chimeway_workflow_transitions)
     + (SELECT count(*) FROM chimeway_deliveries)
     + (SELECT count(*) FROM chimeway_delivery_transitions),
       (SELECT count(*) FROM procrastinate_jobs)
"""


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(COUNTED).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


WAL_LSN = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"


@contextmanager
def commit_costs(url: str, n: int) -> Iterator[dict[str, Any]]:
    """Over the block: WAL bytes per operation (server-wide, so run it on a quiet server),
    the mean number of sessions waiting for the NOTIFY commit lock
    (:class:`bench.common.NotifyLockWaiters`), and the CPU milliseconds per operation of
    this process (the client) and of the PostgreSQL server (:class:`bench.common.CpuSplit`;
    the lock's sampler left out of both), and the share of the machine's CPU stolen by the
    hypervisor meanwhile (a run that slows both sides alike shows it there)."""
    found: dict[str, Any] = {}
    start = int(common.scalar(url, WAL_LSN))
    waiters = common.NotifyLockWaiters(url, conninfo_to_dict(url)["dbname"])
    cpu = common.CpuSplit(waiters.thread_id, waiters.backend_pid).start()
    try:
        yield found
    finally:
        cpu.stop()
        found["notify_lock_waiting"] = waiters.stop().mean()
        found["wal_bytes_per_op"] = round((int(common.scalar(url, WAL_LSN)) - start) / n)
        found["client_cpu_ms"] = round(cpu.client / n * 1000, 3)
        found["server_cpu_ms"] = round(cpu.server / n * 1000, 3)
        found["steal_pct"] = round(cpu.steal * 100, 1)


def measured(url: str, what: str, n: int, run: Any) -> dict[str, Any]:
    """Run ``run()`` and report rows (Chimeway's tables) and jobs written per second, WAL
    per operation and the sessions waiting for the NOTIFY commit lock."""
    rows0, jobs0 = counts(url)
    started = time.perf_counter()
    with commit_costs(url, n) as costs:
        run()
    elapsed = time.perf_counter() - started
    rows1, jobs1 = counts(url)
    rows, jobs = rows1 - rows0, jobs1 - jobs0
    return costs | {
        "what": what,
        "n": n,
        "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "rows": rows,
        "rows_per_s": round(rows / elapsed, 1),
        "jobs": jobs,
        "jobs_per_s": round(jobs / elapsed, 1),
    }


def fan_out(url: str, notifier: type, n: int, key: str) -> dict[str, Any]:
    with bench_app.build(url) as cw:
        cw.trigger(notifier, {"n": 1, "prefix": "warm"}, tenant_id="t", idempotency_key=f"w{key}")
        return measured(
            url,
            f"chimeway fan-out, {notifier.key}",
            n,
            lambda: cw.trigger(notifier, {"n": n}, tenant_id="t", idempotency_key=key),
        )


#: The tenant of the single-recipient triggers that take planning's path: a tenant-wide cap on
#: in-app sends that no recipient reaches (a million a day) makes some policy able to apply
#: to every delivery, and changes nothing. (An opt-in would not: it cannot change a verdict,
#: so the one statement goes ahead.)
PLANNED_TENANT = "t-policy"
#: The client's protocol messages the server answers before the client goes on.
WAITS = ("Query", "Sync")


def flush_not_awaited(url: str) -> str:
    """``url`` (a URL or a conninfo string) with its sessions' commits not waiting for their
    WAL flush."""
    return make_conninfo(url, options="-c synchronous_commit=off")


def in_threads(threads: int, work: Callable[[int], None]) -> None:
    """``work(t)`` in each of ``threads`` threads, ``t`` from 0. Every threaded row of this
    bench runs so, each thread looping over its share as raw's always did: an executor task
    per trigger cost the client about 0.2 ms a trigger, which raw's loops never paid."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))


@contextmanager
def thread_connections(url: str, threads: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """One connection of its own per thread (``conns[t]`` for thread ``t``), open until the
    block ends, so that they are still open when the CPU is counted, and closed however it
    ends."""
    with ExitStack() as stack:
        yield [stack.enter_context(psycopg.connect(url)) for _ in range(threads)]


def two_step(
    cw: Any, prefix: str, key: str, tenant: str = "t", conn: psycopg.Connection[Any] | None = None
) -> None:
    """One single-recipient trigger of the bench's two-step workflow."""
    cw.trigger(
        bench_app.TwoStep,
        {"n": 1, "prefix": prefix},
        tenant_id=tenant,
        idempotency_key=key,
        conn=conn,
    )


def singles(url: str, n: int, threads: int, tenant: str = "t", tag: str = "") -> dict[str, Any]:
    with bench_app.build(url) as cw:
        cw.engine.resize_pool(threads + 1)
        if tenant == PLANNED_TENANT:
            cw.preferences.set_cap(tenant, None, 1_000_000, dt.timedelta(days=1), channel="in_app")

        def work(t: int) -> None:
            for i in range(t, n, threads):
                two_step(cw, f"s{i}", f"{tag}s{i}", tenant)

        two_step(cw, "s-1", f"{tag}s-1", tenant)  # warm: the definition is stored and cached
        path = "planning's path" if tenant == PLANNED_TENANT else "one statement"
        result = measured(
            url,
            f"chimeway single-recipient triggers, {threads} threads ({path})",
            n,
            lambda: in_threads(threads, work),
        )
        result["round_trips"] = round_trips(cw, tenant, 200, tag)
        return result


def singles_together(url: str, n: int, threads: int, per_transaction: int) -> dict[str, Any]:
    """The same single-recipient triggers, ``per_transaction`` of them in each of the
    threads' transactions (``conn=``): one notifying commit, one WAL flush, for all of
    them."""
    with bench_app.build(url) as cw:
        cw.engine.resize_pool(threads + 1)

        def work(t: int) -> None:
            for start in range(t * per_transaction, n, threads * per_transaction):
                with cw.pool.connection() as conn:
                    for i in range(start, min(start + per_transaction, n)):
                        two_step(cw, f"g{i}", f"g{i}", conn=conn)

        return measured(
            url,
            f"chimeway single-recipient triggers, {threads} threads, "
            f"{per_transaction} per transaction",
            n,
            lambda: in_threads(threads, work),
        )


def in_app_transactions(url: str, n: int, threads: int, first: int = 0) -> dict[str, Any]:
    """The case raw's transactions stand for: the app inserts its own row, triggers in that
    transaction (``conn=``) and commits; one connection per thread, open until the CPU is
    counted (as raw's). Rows and keys ``first`` to ``first + n - 1``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_orders (id bigint PRIMARY KEY, data jsonb NOT NULL)"
        )
    with bench_app.build(url) as cw, thread_connections(url, threads) as conns:

        def work(t: int) -> None:
            conn = conns[t]
            for i in range(first + t, first + n, threads):
                conn.execute("INSERT INTO bench_orders VALUES (%s, %s)", [i, Jsonb({"i": i})])
                two_step(cw, f"a{i}", f"a{i}", conn=conn)
                conn.commit()

        work_warm = conns[0]
        two_step(cw, "aw", f"aw{first}", conn=work_warm)
        work_warm.commit()
        return measured(
            url,
            f"app row + trigger in the app's transaction + commit, {threads} threads",
            n,
            lambda: in_threads(threads, work),
        )


def round_trips(cw: Any, tenant: str, n: int, tag: str = "") -> float:
    """Round trips per single-recipient trigger on the connection the trigger takes from
    the pool (its checkout is not counted): libpq's trace of each, the client's messages
    that wait for the server (a simple Query, an extended-protocol Sync) counted."""
    pool = cw.engine.pool
    real = pool.connection
    counted = 0

    @contextmanager
    def traced(*args: Any, **kwargs: Any) -> Iterator[Any]:
        nonlocal counted
        with real(*args, **kwargs) as conn, tempfile.TemporaryFile("w+") as trace:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                yield conn
            finally:
                conn.pgconn.untrace()
                trace.seek(0)
                for line in trace:
                    parts = line.split("\t")
                    if parts[0] == "F" and len(parts) > 2 and parts[2].strip() in WAITS:
                        counted += 1

    pool.connection = traced
    try:
        for i in range(n):
            two_step(cw, f"rt{i}", f"{tag}rt{i}", tenant)
    finally:
        del pool.connection
    return round(counted / n, 2)


def raw_rows(url: str, rows: int, how: str) -> dict[str, Any]:
    """The same number of rows as the fan-out wrote, in one transaction (uuid key, two texts
    and a jsonb: close to a notification or delivery row): with ``unnest`` of array
    parameters 1000 rows per statement, as Chimeway writes (``text``: psycopg's default
    text format; ``binary``: the same with binary parameters), or with COPY."""
    table = f"bench_rows_{how}"
    payload = Jsonb(bench_app.CONTENT)
    insert = (
        f"INSERT INTO {table} (tenant_id, recipient_id, data) "
        "SELECT 't', r, d FROM unnest(%{0}::text[], %{0}::jsonb[]) AS x (r, d)"
    )

    def run() -> None:
        with psycopg.connect(url) as conn:
            if how == "copy":
                with conn.cursor().copy(
                    f"COPY {table} (tenant_id, recipient_id, data) FROM STDIN".encode()
                ) as copy:
                    for i in range(rows):
                        copy.write_row(("t", f"u-{i}", payload))
                return
            for start in range(0, rows, 1000):
                size = min(1000, rows - start)
                conn.execute(
                    insert.format("b" if how == "binary" else "s").encode(),
                    [[f"u-{start + i}" for i in range(size)], [payload] * size],
                )

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "tenant_id text NOT NULL, recipient_id text NOT NULL, data jsonb NOT NULL)".encode()
        )
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    what = {"text": "unnest, text params", "binary": "unnest, binary params", "copy": "COPY"}
    return {
        "what": f"raw psycopg insert ({what[how]})",
        "n": rows,
        "seconds": round(elapsed, 3),
        "per_s": round(rows / elapsed, 1),
        "rows": rows,
        "rows_per_s": round(rows / elapsed, 1),
        "jobs": 0,
        "jobs_per_s": 0,
    }


def raw_batch_defer(url: str, n: int) -> dict[str, Any]:
    def run() -> None:
        with psycopg.connect(url) as conn:
            common.raw_defer(conn, "bench.noop", [{"i": i} for i in range(n)])

    return measured(url, "raw Procrastinate batch_defer", n, run)


def raw_singles(url: str, n: int, threads: int, first: int = 0, pad: int = 0) -> dict[str, Any]:
    """What one transaction per trigger costs at least: insert a row, defer a job, commit
    (rows ``first`` to ``first + n - 1``). With ``pad``, each row also carries that many
    bytes of incompressible text, stored inline: as much WAL per commit as a trigger writes,
    for the same work otherwise. The threads' connections stay open until the CPU is
    counted."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_one (id bigint PRIMARY KEY, data jsonb NOT NULL, "
            "pad text NOT NULL DEFAULT '')"
        )
        conn.execute("ALTER TABLE bench_one ALTER COLUMN pad SET STORAGE PLAIN")
    padding = secrets.token_hex(pad // 2 + 1)[:pad]
    padded = f", rows padded by {pad:,} B" if pad else ""
    with thread_connections(url, threads) as conns:

        def work(t: int) -> None:
            conn = conns[t]
            for i in range(first + t, first + n, threads):
                conn.execute(
                    "INSERT INTO bench_one VALUES (%s, %s, %s)", [i, Jsonb({"i": i}), padding]
                )
                common.raw_defer(conn, "bench.noop", [{"i": i}])
                conn.commit()

        return measured(
            url,
            f"raw insert + defer + commit, {threads} threads{padded}",
            n,
            lambda: in_threads(threads, work),
        )


def unflushed_pair(
    url: str, n: int, threads: int, first: int, tag: str, chimeway_first: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Single triggers and raw transactions once more, both with their commits not waiting
    for the WAL flush (raw's rows ``first`` on, the triggers' keys tagged ``tag``)."""
    unflushed_url = flush_not_awaited(url)

    def chimeway() -> dict[str, Any]:
        return singles(unflushed_url, n, threads, tag=tag)

    def raw() -> dict[str, Any]:
        return raw_singles(unflushed_url, n, threads, first)

    if chimeway_first:
        single = chimeway()
        raw_single = raw()
    else:
        raw_single = raw()
        single = chimeway()
    for row in (single, raw_single):
        row["what"] += ", commits not awaiting flush"
    return single, raw_single


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--recipients", type=int, default=10_000, help="fan-out size")
    p.add_argument("--singles", type=int, default=10_000, help="single-recipient triggers")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="single-recipient triggers and raw transactions measured this many times, "
        "alternating which goes first; the median ratio is reported",
    )
    args = p.parse_args()
    with common.fresh_database(args.database_url, "trigger", args.keep_db) as url:
        common.note("fan-out (workflow)")
        fan = fan_out(url, bench_app.TwoStep, args.recipients, "fan")
        common.note("fan-out (plain)")
        plain = fan_out(url, bench_app.Plain, args.recipients, "plain")
        common.note("baselines: raw rows, raw batch_defer")
        rows = raw_rows(url, fan["rows"], "text")
        rows_binary = raw_rows(url, fan["rows"], "binary")
        rows_copy = raw_rows(url, fan["rows"], "copy")
        defer = raw_batch_defer(url, args.recipients)
        pairs = []
        flushless: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for pair in range(args.pairs):
            common.note(f"single-recipient triggers and raw transactions, pair {pair + 1}")
            chimeway_first = pair % 2 == 0  # the order alternates pair by pair
            if not chimeway_first:
                raw_pair = raw_singles(url, args.singles, args.threads, pair * args.singles)
            single_pair = singles(url, args.singles, args.threads, tag=f"p{pair}")
            if chimeway_first:
                raw_pair = raw_singles(url, args.singles, args.threads, pair * args.singles)
            # Raw again, each row padded to the trigger's WAL: does writing more bind?
            pad = max(0, single_pair["wal_bytes_per_op"] - raw_pair["wal_bytes_per_op"])
            padded_pair = raw_singles(
                url, args.singles, args.threads, (args.pairs + pair) * args.singles, pad
            )
            in_app_pair = in_app_transactions(url, args.singles, args.threads, pair * args.singles)
            pairs.append((single_pair, raw_pair, padded_pair, in_app_pair))
            # The same pair with the flush off the commit path, the order reversed.
            flushless.append(
                unflushed_pair(
                    url,
                    args.singles,
                    args.threads,
                    (2 * args.pairs + pair) * args.singles,
                    f"u{pair}",
                    not chimeway_first,
                )
            )
        ratios = [a["per_s"] / b["per_s"] for a, b, _, _ in pairs]
        in_app_ratios = sorted(d["per_s"] / b["per_s"] for _, b, _, d in pairs)
        unflushed_ratios = [a["per_s"] / b["per_s"] for a, b in flushless]
        # The pair whose ratio is the median stands for all in the table and the JSON line.
        middle = sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]
        single, raw_single, raw_padded, in_app = pairs[middle]
        unflushed, raw_unflushed = flushless[
            sorted(range(len(flushless)), key=unflushed_ratios.__getitem__)[len(flushless) // 2]
        ]
        together = singles_together(url, args.singles, args.threads, 10)
        common.note("single-recipient triggers, planning's path")
        planned = singles(url, args.singles, args.threads, PLANNED_TENANT)
        common.table(
            "Trigger throughput (in process, no worker)",
            [
                "what",
                "n",
                "seconds",
                "n/s",
                "rows",
                "rows/s",
                "jobs",
                "jobs/s",
                "WAL B/op",
                "lock q",
                "client ms/op",
                "server ms/op",
                "steal %",
            ],
            [
                [
                    r["what"],
                    r["n"],
                    r["seconds"],
                    r["per_s"],
                    r["rows"],
                    r["rows_per_s"],
                    r["jobs"],
                    r["jobs_per_s"],
                    r.get("wal_bytes_per_op", ""),
                    r.get("notify_lock_waiting", ""),
                    r.get("client_cpu_ms", ""),
                    r.get("server_cpu_ms", ""),
                    r.get("steal_pct", ""),
                ]
                for r in (
                    fan,
                    plain,
                    rows,
                    rows_binary,
                    rows_copy,
                    defer,
                    single,
                    raw_single,
                    raw_padded,
                    unflushed,
                    raw_unflushed,
                    together,
                    in_app,
                    planned,
                )
            ],
        )
        met = fan["per_s"] >= TARGET_FANOUT
        print(
            f"\nfan-out: {fan['per_s']:,.0f} recipients/s (target >= {TARGET_FANOUT:,}): "
            f"{'met' if met else 'MISSED'}; rows/s vs raw insert: "
            f"{fan['rows_per_s'] / rows['rows_per_s']:.2f} (text params), "
            f"{fan['rows_per_s'] / rows_binary['rows_per_s']:.2f} (binary), "
            f"{fan['rows_per_s'] / rows_copy['rows_per_s']:.2f} (COPY); "
            f"{fan['jobs']:,} deliver jobs for {fan['n']:,} deliveries (chunks of "
            f"delivery_batch_size; the raw batch_defer row is one job per delivery)"
        )
        print(
            f"single triggers: {single['per_s']:,.0f}/s vs raw insert+defer transactions "
            f"{raw_single['per_s']:,.0f}/s: {single['per_s'] / raw_single['per_s']:.2f}, the "
            f"median of {len(pairs)} pairs ({', '.join(f'{r:.2f}' for r in ratios)}) "
            f"(target >= 0.8); planning's path (some policy can apply) {planned['per_s']:,.0f}/s: "
            f"{planned['per_s'] / raw_single['per_s']:.2f}; round trips per trigger "
            f"{single['round_trips']} (one statement) vs {planned['round_trips']} (planning's "
            f"path), checkout not counted"
        )
        print(
            f"commits: WAL per single trigger {single['wal_bytes_per_op']:,} B vs raw "
            f"{raw_single['wal_bytes_per_op']:,} B (server-wide); sessions waiting for the "
            f"NOTIFY commit lock, of {args.threads}: {single['notify_lock_waiting']} vs raw "
            f"{raw_single['notify_lock_waiting']} (each notifying commit holds it through its "
            f"WAL flush); 10 triggers per transaction {together['per_s']:,.0f}/s: "
            f"{together['per_s'] / raw_single['per_s']:.2f} of raw; in the app's transactions "
            f"(its row, the trigger, commit: what raw's transactions do) {in_app['per_s']:,.0f}/s, "
            f"the median ratio to the same pair's raw {in_app_ratios[len(in_app_ratios) // 2]:.2f} "
            f"({', '.join(f'{r:.2f}' for r in in_app_ratios)})"
        )
        cpu_ms = {
            name: r["client_cpu_ms"] + r["server_cpu_ms"]
            for name, r in (("chimeway", single), ("raw", raw_single))
        }
        print(
            f"CPU per single trigger: client {single['client_cpu_ms']:.2f} + server "
            f"{single['server_cpu_ms']:.2f} = {cpu_ms['chimeway']:.2f} ms vs raw "
            f"{raw_single['client_cpu_ms']:.2f} + {raw_single['server_cpu_ms']:.2f} = "
            f"{cpu_ms['raw']:.2f} ms; on a busy machine the rates go as CPU per operation: "
            f"{cpu_ms['raw'] / cpu_ms['chimeway']:.2f} predicted, "
            f"{single['per_s'] / raw_single['per_s']:.2f} measured. Raw with rows padded to "
            f"the trigger's WAL ({raw_padded['wal_bytes_per_op']:,} B per commit): "
            f"{raw_padded['per_s']:,.0f}/s, {raw_padded['per_s'] / raw_single['per_s']:.2f} of "
            f"raw unpadded"
        )
        print(
            f"commits not waiting for their WAL flush (synchronous_commit = off on both sides, "
            f"a diagnosis): single triggers {unflushed['per_s']:,.0f}/s vs raw "
            f"{raw_unflushed['per_s']:,.0f}/s: "
            f"{unflushed['per_s'] / raw_unflushed['per_s']:.2f}, the median of {len(flushless)} "
            f"pairs ({', '.join(f'{r:.2f}' for r in unflushed_ratios)}) (CPU per operation "
            f"{unflushed['client_cpu_ms'] + unflushed['server_cpu_ms']:.2f} vs "
            f"{raw_unflushed['client_cpu_ms'] + raw_unflushed['server_cpu_ms']:.2f} ms)"
        )
        common.json_line(
            "trigger",
            url,
            {
                "fan_out": fan,
                "fan_out_plain": plain,
                "raw_rows": rows,
                "raw_rows_binary": rows_binary,
                "raw_rows_copy": rows_copy,
                "raw_batch_defer": defer,
                "singles": single,
                "raw_singles": raw_single,
                "raw_singles_padded": raw_padded,
                "singles_together": together,
                "singles_in_app_transactions": in_app,
                "singles_unflushed": unflushed,
                "raw_singles_unflushed": raw_unflushed,
                "singles_pairs": [
                    {
                        "chimeway": a["per_s"],
                        "raw": b["per_s"],
                        "raw_padded": c["per_s"],
                        "in_app_transactions": d["per_s"],
                        "ratio": round(r, 3),
                        "in_app_ratio": round(d["per_s"] / b["per_s"], 3),
                        "unflushed_ratio": round(u, 3),
                        "cpu_ms": {
                            "chimeway": a["client_cpu_ms"] + a["server_cpu_ms"],
                            "raw": b["client_cpu_ms"] + b["server_cpu_ms"],
                        },
                    }
                    for (a, b, c, d), r, u in zip(pairs, ratios, unflushed_ratios, strict=True)
                ],
                "singles_planned": planned,
                "target_fanout_per_s": TARGET_FANOUT,
                "met": met,
            },
        )


if __name__ == "__main__":
    main()
