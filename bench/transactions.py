"""Where the transactions of a one-recipient step come from: the workers', the producers',
and the ones no client asked for.

``bench.peers`` counts a phase's transactions in ``pg_stat_database``, for the whole
database. This script runs the same single-mode phases (Chimeway, DBOS Transact's queue,
raw Procrastinate; ``bench.peers``'s systems and settings) on a private PostgreSQL cluster
that logs every statement (``log_min_duration_statement = 0``, each line prefixed with the
database, the session's ``application_name`` and its virtual transaction id), and splits
each phase's count by who ran them:

* **worker**: transactions that sessions of the worker processes ran (``PGAPPNAME`` is
  ``bench-worker`` in their environment: ``bench.common.Workers``);
* **producer**: the bench's triggers/enqueues (this process, ``bench-producer``), less the
  phase's own completion polls;
* **unasked**: what ``pg_stat_database`` counts beyond every logged statement. PostgreSQL
  runs a transaction in each idle listening session of a database for every commit that
  notifies, on any channel (``ProcessIncomingNotify``): so these grow with the number of
  LISTEN sessions times the notifying commits.

Round trips are counted alongside (a simple-protocol statement, an extended-protocol
execution, a separate prepare). Logging every statement slows every system alike; the
counts, not the speed, are this script's figures (``bench.peers`` has the speed).

    .venv/bin/python -m bench.transactions                 # 2,000 units, 1 round
    .venv/bin/python -m bench.transactions --n 500 --systems chimeway

Needs the ``bench`` extra (DBOS) unless ``--systems`` leaves it out, and PostgreSQL 15's
binaries in ``/usr/lib/postgresql/15/bin`` (run as root, the server runs as ``postgres``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import common, hosts
from bench.peers_phase import Phase, Settings

if TYPE_CHECKING:
    from bench.peers import System  # imports DBOS (the bench extra)

#: The server's log line: ``<database>|<application>|<pid>|<vxid>|LOG:  duration: ...``.
PREFIX = "%d|%a|%p|%v|"
LINE = re.compile(
    r"^(?P<db>[^|]*)\|(?P<app>[^|]*)\|(?P<pid>\d+)\|(?P<vxid>[^|]*)\|LOG:  duration: [\d.]+ ms"
    r"  (?P<kind>statement|execute|parse|bind)(?P<name> [^:]*)?: ?(?P<text>.*)$"
)
#: Statements that end a transaction block (counted at its BEGIN) rather than running one.
ENDS = ("COMMIT", "ROLLBACK", "END", "ABORT")
SYSTEMS = {
    "chimeway": ("chimeway", "chimeway", "trigger"),
    "dbos": ("dbos queue", "dbos", "queue"),
    "raw": ("raw procrastinate", "raw", "keep"),
}
#: Each system's sessions by ``application_name``: its workers', then its producers' (DBOS
#: names its own sessions: its workers ``dbos_transact``, its client ``dbos_transact_client``).
APPS = {
    "chimeway": ({"bench-worker"}, {"bench-producer"}),
    "dbos": ({"dbos_transact"}, {"dbos_transact_client", "bench-producer"}),
    "raw": ({"bench-worker"}, {"bench-producer"}),
}


@dataclass
class Tally:
    """Transactions and round trips of one kind of session over a phase."""

    transactions: int = 0
    round_trips: int = 0
    statements: Counter[str] = field(default_factory=Counter)


def tally(lines: Iterable[str], dbname: str) -> dict[str, Tally]:
    """Each application's logged transactions and round trips on ``dbname``.

    A transaction block's statements share its virtual transaction id, a statement run
    outside one has its own; a simple-protocol statement is logged after its transaction
    ended (id ``n/0``), so each such line is a transaction of its own, except the lines
    that end a block."""
    by_app: dict[str, Tally] = {}
    seen: set[tuple[str, str]] = set()
    for raw in lines:
        m = LINE.match(raw)
        if m is None or m["db"] != dbname or m["kind"] == "bind":
            continue
        t = by_app.setdefault(m["app"], Tally())
        text = m["text"].strip()
        named_parse = m["kind"] == "parse" and (m["name"] or "").strip() != "<unnamed>"
        if m["kind"] == "statement" or m["kind"] == "execute" or named_parse:
            t.round_trips += 1
            t.statements[(text.splitlines() or [""])[0][:70]] += m["kind"] != "parse"
        if m["kind"] == "parse" and not named_parse:
            continue  # part of its execution's round trip and transaction
        vxid = m["vxid"]
        if vxid.endswith("/0"):
            if not text.upper().startswith(ENDS):
                t.transactions += 1
        elif (m["pid"], vxid) not in seen:
            seen.add((m["pid"], vxid))
            t.transactions += 1
    return by_app


def calibrate(url: str, listeners: int = 2, notifies: int = 200) -> float:
    """Transactions PostgreSQL counts per notifying commit and idle listening session, when
    the sessions listen on another channel than the one notified (1.0 if each wakes)."""
    import time

    import psycopg

    dbname = "bench_tx_calibrate"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {dbname}")
    target = common.with_dbname(url, dbname)
    count = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
    idle = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    try:
        before = common.scalar(url, count, [dbname])
        sessions = [psycopg.connect(target, autocommit=True) for _ in range(listeners)]
        for conn in sessions:
            conn.execute("LISTEN bench_tx_elsewhere")
        with psycopg.connect(target, autocommit=True) as notifier:
            for _ in range(notifies):
                notifier.execute("SELECT pg_notify('bench_tx_here', '')")
                time.sleep(0.002)  # let the listeners go idle again: one wake-up each
        for conn in sessions:
            conn.close()
        common.wait_for(
            lambda: common.scalar(url, idle, [dbname]) == 0, timeout=30, what="sessions exit"
        )
        asked = notifies + 2 * listeners + 1  # the notifies, each LISTEN, the sessions' start
        return (common.scalar(url, count, [dbname]) - before - asked) / (notifies * listeners)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {dbname} WITH (FORCE)")


def _merged(by_app: dict[str, Tally], apps: set[str]) -> Tally:
    """The tallies of ``apps``, taken out of ``by_app`` and added up."""
    out = Tally()
    for app in apps:
        t = by_app.pop(app, Tally())
        out.transactions += t.transactions
        out.round_trips += t.round_trips
        out.statements.update(t.statements)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="two-step units per phase")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=4, help="producer threads")
    p.add_argument("--systems", default="chimeway,dbos,raw", help="comma-separated")
    p.add_argument("--dbos-queue-poll", type=float, default=0.01)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--keep-log", metavar="PATH", help="copy the server's statement log here")
    common.worker_options(p, processes=2)
    args = p.parse_args()
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def make_systems(args: argparse.Namespace, settings: Settings, url: str) -> Any:
    from contextlib import ExitStack

    stack = ExitStack()
    found: dict[str, System] = {}
    if "chimeway" in args.systems:
        from bench.peers_chimeway import ChimewaySystem

        db = stack.enter_context(common.fresh_database(url, "tx_chimeway"))
        found["chimeway"] = ChimewaySystem(settings, db, False)
    if "dbos" in args.systems:
        from bench.peers_dbos import DbosSystem

        db = stack.enter_context(common.empty_database(url, "tx_dbos"))
        found["dbos"] = DbosSystem(settings, db, False, args.dbos_queue_poll)
    if "raw" in args.systems:
        from bench.peers_raw import RawSystem

        db = stack.enter_context(common.empty_database(url, "tx_raw"))
        found["raw"] = RawSystem(settings, db, False)
    return stack, found


def dbname_of(system: Any) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(system.url)["dbname"])


def measure(
    cluster: hosts.Cluster, name: str, system: Any, variant: str, tag: str
) -> dict[str, Any]:
    """One phase, and its transactions split by who ran them: the server log's lines from
    the phase's first count of ``pg_stat_database`` to its last (workers' start-up before
    and their stop within, as in that count)."""
    marks: list[int] = []
    start, finish = Phase.start, Phase.finish

    def marked_start(phase: Phase, workers: Any) -> None:
        start(phase, workers)
        marks.append(cluster.log.stat().st_size)

    def marked_finish(phase: Phase, steps: int) -> dict[str, Any]:
        out = finish(phase, steps)
        marks.append(cluster.log.stat().st_size)
        return out

    Phase.start, Phase.finish = marked_start, marked_finish  # type: ignore[method-assign]
    try:
        phase = system.throughput("single", variant, tag)
    finally:
        Phase.start, Phase.finish = start, finish  # type: ignore[method-assign]
    with cluster.log.open("rb") as log:
        log.seek(marks[0])
        lines = log.read(marks[-1] - marks[0]).decode(errors="replace").splitlines()
    by_app = tally(lines, dbname_of(system))
    steps = phase["steps"]
    worker_apps, producer_apps = APPS[name]
    worker, producer = _merged(by_app, worker_apps), _merged(by_app, producer_apps)
    other = Tally(
        sum(t.transactions for t in by_app.values()), sum(t.round_trips for t in by_app.values())
    )
    polls = phase["completion_polls"]
    total = round(phase["xacts_per_step"] * steps)  # polls already left out
    logged = worker.transactions + producer.transactions - polls + other.transactions
    return {
        "steps": steps,
        "steps_per_s": phase["steps_per_s"],
        "total_per_step": round(total / steps, 2),
        "worker_per_step": round(worker.transactions / steps, 2),
        "producer_per_step": round((producer.transactions - polls) / steps, 2),
        "other_apps_per_step": round(other.transactions / steps, 2),
        "unasked_per_step": round((total - logged) / steps, 2),
        "worker_round_trips_per_step": round(worker.round_trips / steps, 2),
        "producer_round_trips_per_step": round((producer.round_trips - polls) / steps, 2),
        "worker_top_statements": dict(worker.statements.most_common(8)),
    }


def main() -> None:
    args = parse_args()
    os.environ["PGAPPNAME"] = "bench-producer"  # this process's sessions; workers override
    settings_pg = [
        "log_min_duration_statement=0",
        f"log_line_prefix={PREFIX}",
        "max_connections=400",
    ]
    with hosts.Cluster(port=_free_port(), settings=settings_pg) as cluster:
        settings = Settings.from_args(args, cluster.url, frozenset({"raw"}))
        per_wake = calibrate(cluster.url)
        common.note(f"calibration: {per_wake:.2f} transactions per notify and idle listener")
        stack, found = make_systems(args, settings, cluster.url)
        rounds: list[dict[str, Any]] = []
        with stack:
            for number in range(1, args.rounds + 1):
                load = round(os.getloadavg()[0], 2)
                result: dict[str, Any] = {"round": number, "load_1m": load}
                for name in args.systems:
                    label, system, variant = SYSTEMS[name]
                    common.note(f"round {number}: {label}")
                    result[name] = measure(cluster, name, found[system], variant, f"tx{number}")
                rounds.append(result)
        report(args, rounds, cluster.url, per_wake)
        if args.keep_log:
            shutil.copyfile(cluster.log, args.keep_log)


def report(
    args: argparse.Namespace, rounds: list[dict[str, Any]], url: str, per_wake: float
) -> None:
    rows = []
    for r in rounds:
        for name in args.systems:
            m = r[name]
            rows.append(
                [
                    f"{SYSTEMS[name][0]} (round {r['round']})",
                    f"{m['total_per_step']:.2f}",
                    f"{m['worker_per_step']:.2f}",
                    f"{m['producer_per_step']:.2f}",
                    f"{m['unasked_per_step']:.2f}",
                    f"{m['worker_round_trips_per_step']:.2f}",
                    f"{m['producer_round_trips_per_step']:.2f}",
                ]
            )
    common.table(
        f"Transactions per step, single mode, {args.n:,} two-step units per phase "
        "(statement logging on: counts, not speed)",
        [
            "system",
            "all (pg_stat_database)",
            "workers",
            "producers",
            "unasked (listener wake-ups)",
            "worker round trips",
            "producer round trips",
        ],
        rows,
    )
    for r in rounds:
        for name in args.systems:
            top = r[name]["worker_top_statements"]
            print(f"{name} round {r['round']}: the workers' most run statements {top}")
    print(
        f"Calibration, same server: {per_wake:.2f} transactions per notifying commit and idle "
        "listening session (a LISTEN on another channel than the one notified)"
    )
    common.json_line(
        "transactions",
        url,
        {"settings": dict(vars(args)), "per_wake": round(per_wake, 3), "rounds": rounds},
    )


if __name__ == "__main__":
    main()
