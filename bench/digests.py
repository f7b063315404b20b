"""Batching (digests, design §15): joins into open batches beside plain triggers, and the
close of many batches due at the same instant.

1. **Joins.** One trigger fanning out to ``--batches`` recipients opens one batch each
   (``bench_digest``: a one-hour window per recipient and post). Then ``--triggers``
   one-recipient triggers from ``--threads`` threads join them (recipient ``i % batches``:
   ``triggers / batches`` members each), alternating, in ``--rounds`` rounds, with as many
   plain triggers of the same email step without a batch (``bench_one_step``: a run and a
   delivery with its job per trigger) on the same recipients. Triggers/s of each kind, in the
   same run. Timed in this process, no worker running.
2. **Close** (in a second database). With ``--processes`` real ``chimeway worker`` processes
   running, one trigger
   opens ``--batches`` batches of ``bench_digest_close`` in one transaction (so they all
   close at the same instant, 15 s later), ``--members`` more triggers join each, and the
   workers close them all: each batch's timer falls due at that instant (the first timers
   take up to 200 others along, set-wise, as for any due wait). Lateness of each batch =
   ``closed_at - closes_at`` (both on the database's clock), and of its digest's send =
   the attempt's end minus ``closes_at``.

    .venv/bin/python -m bench.digests                       # 2,000 joins, under a minute
    .venv/bin/python -m bench.digests --triggers 100000     # the issue's size, ~10 min here
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import bench_app, common
from bench.common import Workers
from chimeway import Chimeway, Notifier, Triggered


def trigger_many(
    cw: Chimeway, notifier: type[Notifier], tag: str, n: int, batches: int, threads: int
) -> float:
    """``n`` one-recipient triggers from ``threads`` threads; triggers per second."""
    counter = itertools.count()
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= n:
                return
            result = cw.trigger(
                notifier,
                {"to": f"d-{i % batches}", "post": "p", "n": i},
                tenant_id="t",
                idempotency_key=f"{tag}-{i}",
            )
            assert isinstance(result, Triggered)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return n / (time.perf_counter() - started)


def joins(url: str, args: Any) -> dict[str, Any]:
    per_round = args.triggers // args.rounds
    rates: dict[str, list[float]] = {"join": [], "plain": []}
    with bench_app.build(url) as cw:
        cw.engine.resize_pool(args.threads + 2)
        started = time.perf_counter()
        cw.trigger(
            bench_app.Digest,
            {"n": args.batches, "prefix": "d", "post": "p"},
            tenant_id="t",
            idempotency_key="open",
        )
        opened = args.batches / (time.perf_counter() - started)
        for r in range(args.rounds):
            for kind in ("join", "plain") if r % 2 == 0 else ("plain", "join"):
                notifier = bench_app.Digest if kind == "join" else bench_app.OneStep
                rate = trigger_many(
                    cw, notifier, f"{kind}{r}", per_round, args.batches, args.threads
                )
                rates[kind].append(rate)
                common.note(f"round {r + 1}: {kind} {rate:.0f} triggers/s")
    members = common.scalar(
        url, "SELECT sum(member_count) FROM chimeway_digests WHERE workflow_key = 'bench_digest'"
    )
    runs = common.scalar(
        url,
        "SELECT count(*) FROM chimeway_workflow_runs r JOIN chimeway_workflow_definitions d "
        "ON d.id = r.definition_id WHERE d.workflow_key = 'bench_digest'",
    )
    assert members == args.batches + per_round * args.rounds, members
    assert runs == args.batches, runs
    return {
        "opened_per_s": round(opened, 1),
        "join_per_s": [round(x, 1) for x in rates["join"]],
        "plain_per_s": [round(x, 1) for x in rates["plain"]],
        "members_total": members,
        "runs": runs,
    }


def closes(url: str, args: Any) -> dict[str, Any]:
    with Workers.from_args(url, args, "digests", env={"BENCH_LATENCY_MS": "0"}):
        with bench_app.build(url) as cw:
            cw.engine.resize_pool(args.threads + 2)
            cw.trigger(
                bench_app.DigestClose,
                {"n": args.batches, "prefix": "c", "post": "p"},
                tenant_id="t",
                idempotency_key="close-open",
            )
            counter = itertools.count()
            lock = threading.Lock()
            n = args.batches * args.members

            def work() -> None:
                while True:
                    with lock:
                        i = next(counter)
                    if i >= n:
                        return
                    cw.trigger(
                        bench_app.DigestClose,
                        {"to": f"c-{i % args.batches}", "post": "p"},
                        tenant_id="t",
                        idempotency_key=f"close-join-{i}",
                    )

            with ThreadPoolExecutor(args.threads) as pool:
                for future in [pool.submit(work) for _ in range(args.threads)]:
                    future.result()
        early = common.scalar(
            url,
            "SELECT count(*) FROM chimeway_digests WHERE workflow_key = 'bench_digest_close' "
            "AND closed_at IS NOT NULL",
        )
        assert early == 0, f"{early} batches closed before the joins were in: raise the window"
        common.wait_for(
            lambda: common.scalar(
                url,
                "SELECT count(*) = %s FROM chimeway_digests g JOIN chimeway_deliveries d "
                "ON d.id = g.delivery_id WHERE g.workflow_key = 'bench_digest_close' "
                "AND d.status = 'succeeded'",
                [args.batches],
            ),
            args.timeout,
            every=0.1,
            what=f"{args.batches} digests sent",
        )
    with bench_app.build(url) as cw, cw.pool.connection() as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM g.closed_at - g.closes_at)::float8, "
            "       extract(epoch FROM max(a.finished_at) - g.closes_at)::float8, "
            "       g.member_count, g.close_reason "
            "FROM chimeway_digests g JOIN chimeway_delivery_attempts a "
            "ON a.delivery_id = g.delivery_id "
            "WHERE g.workflow_key = 'bench_digest_close' GROUP BY g.id"
        ).fetchall()
        digested = conn.execute(
            "SELECT count(*) FROM chimeway_deliveries WHERE status = 'digested'"
        ).fetchone()
    assert len(rows) == args.batches
    assert {r[2] for r in rows} == {args.members + 1}
    assert {r[3] for r in rows} == {"window_elapsed"}
    assert digested is not None and digested[0] == args.batches * args.members
    return {
        "batches": args.batches,
        "members_each": args.members + 1,
        "close_lateness_ms": common.summary_ms([r[0] for r in rows]),
        "send_lateness_ms": common.summary_ms([r[1] for r in rows]),
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--batches", type=int, default=1000, help="open batches")
    p.add_argument("--triggers", type=int, default=2000, help="joins (and as many plain)")
    p.add_argument("--rounds", type=int, default=2, help="join/plain pairs")
    p.add_argument("--threads", type=int, default=8, help="triggering threads")
    p.add_argument("--members", type=int, default=1, help="joins per batch before the close")
    p.add_argument("--timeout", type=float, default=300)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    with common.fresh_database(args.database_url, "digests", args.keep_db) as url:
        joined = joins(url, args)
    # A database of its own: the plain triggers' deliveries, never sent (no worker ran), must
    # not queue ahead of the digests.
    with common.fresh_database(args.database_url, "digests_close", args.keep_db) as url:
        closed = closes(url, args)
    join = sum(joined["join_per_s"]) / len(joined["join_per_s"])
    plain = sum(joined["plain_per_s"]) / len(joined["plain_per_s"])
    common.table(
        f"Joins into {args.batches} open batches vs plain triggers "
        f"({args.triggers} of each, {args.threads} threads, {args.rounds} rounds)",
        ["kind", "triggers/s per round", "mean"],
        [
            ["join an open batch", ", ".join(f"{x:.0f}" for x in joined["join_per_s"]), join],
            [
                "plain (run + delivery + job)",
                ", ".join(f"{x:.0f}" for x in joined["plain_per_s"]),
                plain,
            ],
        ],
    )
    close, send = closed["close_lateness_ms"], closed["send_lateness_ms"]
    common.table(
        f"Close of {args.batches} batches due at the same instant "
        f"({closed['members_each']} members each, {args.processes} worker processes)",
        ["lateness (ms)", "p50", "p99", "max"],
        [
            ["closed_at - closes_at", close["p50_ms"], close["p99_ms"], close["max_ms"]],
            ["digest sent - closes_at", send["p50_ms"], send["p99_ms"], send["max_ms"]],
        ],
    )
    print(f"\njoin/plain = {join / plain:.2f}")
    print(f"opened {joined['opened_per_s']:.0f} batches/s in one fan-out trigger")
    common.json_line("digests", args.database_url, {**vars(args), **joined, **closed})


if __name__ == "__main__":
    main()
