"""``bench.transactions`` counts a phase's transactions and round trips from the server's
statement log: the rules it counts by, on log lines as PostgreSQL 15 writes them."""

from __future__ import annotations

from bench.transactions import tally

DB = "chimeway_bench_tx_chimeway_1"


def line(app: str, pid: int, vxid: str, what: str, db: str = DB) -> str:
    return f"{db}|{app}|{pid}|{vxid}|LOG:  duration: 0.050 ms  {what}"


def test_a_block_is_one_transaction_and_each_statement_one_round_trip() -> None:
    lines = [
        line("w", 1, "3/7", "statement: BEGIN"),
        line("w", 1, "3/7", "parse <unnamed>: SELECT 1"),
        line("w", 1, "3/7", "bind <unnamed>: SELECT 1"),
        line("w", 1, "3/7", "execute <unnamed>: SELECT 1"),
        line("w", 1, "3/7", "execute _pg3_0: UPDATE t SET x = 1"),
        line("w", 1, "3/0", "statement: COMMIT"),  # logged after its transaction ended
    ]
    [(app, t)] = tally(lines, DB).items()
    assert app == "w"
    assert (t.transactions, t.round_trips) == (1, 4)  # BEGIN, two executions, COMMIT


def test_statements_outside_a_block_are_a_transaction_each() -> None:
    lines = [
        line("w", 1, "3/8", "execute _pg3_1: SELECT procrastinate_fetch_job_v2($1, $2)"),
        line("w", 1, "3/9", "execute _pg3_1: SELECT procrastinate_fetch_job_v2($1, $2)"),
        line("w", 2, "4/0", "statement: SELECT count(*) FROM procrastinate_workers"),
        line("w", 2, "4/0", "statement: "),  # a pool's check: an empty query
        line("w", 2, "4/3", "parse _pg3_2: SELECT 2"),  # a prepare: its own Sync
    ]
    t = tally(lines, DB)["w"]
    assert (t.transactions, t.round_trips) == (5, 5)


def test_sessions_apart_by_application_and_other_databases_left_out() -> None:
    lines = [
        line("bench-worker", 1, "3/1", "execute _pg3_0: SELECT 1"),
        line("bench-producer", 2, "3/1", "execute _pg3_0: SELECT 1"),  # same vxid, other pid
        line("bench-worker", 1, "3/1", "execute _pg3_0: SELECT 1", db="other"),
        "2026-11-28 14:00:00 UTC [1] LOG:  checkpoint starting: time",
    ]
    found = tally(lines, DB)
    assert sorted(found) == ["bench-producer", "bench-worker"]
    assert found["bench-worker"].transactions == found["bench-producer"].transactions == 1
