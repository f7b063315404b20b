"""Chimeway beside its peers, DBOS Transact and raw Procrastinate: the same workloads on each,
interleaved (Chimeway, DBOS, raw, Chimeway, ... for ``--rounds`` rounds), each system on its
own database created for the run, each phase starting and stopping its own worker processes
(so no idle worker of another system polls while one is measured).

* ``throughput``: a two-step workflow, no waits, a no-op provider. ``single``: N
  one-recipient triggers / enqueues from ``--threads`` threads (the common app case), plus
  DBOS ``direct`` (``DBOS.start_workflow`` in the worker processes); ``fanout``: one trigger
  to N recipients / one batch enqueue. Steps/s from each system's own rows, and per step:
  transactions and tuples written (``pg_stat_database``; PostgreSQL here has no
  ``pg_stat_statements`` to count statements), WAL bytes and records of the system's own
  database (``pg_walinspect``), CPU of its PostgreSQL backends and of its workers, worker
  peak RSS.
* ``signals``: signal/message commit -> the waiting workflow's next step starts.
* ``timers``: lateness of a 1 s durable wait.

Raw Procrastinate's database is vacuumed before each of its phases (``--vacuum``; why not the
others: ``peers_phase.vacuum``).

    .venv/bin/python -m bench.peers                    # everything, 3 rounds, N = 2,000
    .venv/bin/python -m bench.peers --only throughput --modes single --n 200 --rounds 1

Needs the ``bench`` extra (``pip install -e '.[bench]'``: DBOS Transact). The modules
``peers_chimeway``, ``peers_dbos`` and ``peers_raw`` say exactly what is timed on each system.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Protocol

from bench import common
from bench.peers_chimeway import ChimewaySystem
from bench.peers_dbos import DbosSystem
from bench.peers_phase import Settings, install_walinspect
from bench.peers_raw import RawSystem

WORKLOADS = ("throughput", "signals", "timers")
VACUUMED = {
    "raw": frozenset({"raw"}),
    "all": frozenset({"chimeway", "dbos", "raw"}),
    "none": frozenset[str](),
}
MODES = ("single", "fanout")
# (label, system, variant) measured in each throughput mode, in this order every round.
CONTENDERS = {
    "single": [
        ("chimeway", "chimeway", "trigger"),
        ("dbos queue", "dbos", "queue"),
        ("dbos direct", "dbos", "direct"),
        ("raw procrastinate", "raw", "keep"),
        ("raw, deleting jobs", "raw", "delete"),
    ],
    "fanout": [
        ("chimeway", "chimeway", "trigger"),
        ("dbos queue (batch)", "dbos", "queue"),
        ("raw procrastinate", "raw", "keep"),
        ("raw, deleting jobs", "raw", "delete"),
    ],
}
LATENCY_LABELS = {
    "signals": {
        "chimeway": "chimeway: track_signal commit -> next delivery starts",
        "dbos": "dbos: DBOSClient.send -> line after DBOS.recv",
        "raw": "raw: defer commit -> task starts",
    },
    "timers": {
        "chimeway": "chimeway: WaitUntil(1 s) due -> reactivated",
        "dbos": "dbos: DBOS.sleep(1) due -> next line",
        "raw": "raw: schedule_at (now + 1 s) -> task starts",
    },
}


class System(Protocol):
    def throughput(self, mode: str, variant: str, tag: str) -> dict[str, Any]: ...
    def signals(self, tag: str) -> list[float]: ...
    def timers(self, tag: str) -> list[float]: ...


def parse_args() -> argparse.Namespace:
    p = common.parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=2000, help="two-step units per throughput phase")
    p.add_argument("--only", choices=WORKLOADS, action="append", help="repeatable")
    p.add_argument("--modes", default=",".join(MODES), help="throughput modes, comma-separated")
    p.add_argument("--threads", type=int, default=4, help="enqueuing threads in single mode")
    p.add_argument("--samples", type=int, default=200, help="latency samples per phase")
    p.add_argument("--rate", type=float, default=20, help="latency samples per second")
    p.add_argument("--dbos-queue-poll", type=float, default=0.01, help="DBOS queue polling (s)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument(
        "--vacuum",
        choices=sorted(VACUUMED),
        default="raw",
        help="whose database is vacuumed before each phase (see peers_phase.vacuum)",
    )
    common.worker_options(p, processes=2)
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        p.error(f"--modes: unknown {sorted(unknown)}; choose from {', '.join(MODES)}")
    args.modes = modes
    args.only = args.only or list(WORKLOADS)
    return args


@contextlib.contextmanager
def systems(args: argparse.Namespace, settings: Settings) -> Iterator[dict[str, System]]:
    """One database per system for the run (dropped at the end unless ``--keep-db``)."""
    url, keep = args.database_url, args.keep_db
    with (
        common.fresh_database(url, "peers_chimeway", keep) as chimeway_url,
        common.empty_database(url, "peers_dbos", keep) as dbos_url,
        common.empty_database(url, "peers_raw", keep) as raw_url,
    ):
        walinspect = all(install_walinspect(u) for u in (chimeway_url, dbos_url, raw_url))
        yield {
            "chimeway": ChimewaySystem(settings, chimeway_url, walinspect),
            "dbos": DbosSystem(settings, dbos_url, walinspect, args.dbos_queue_poll),
            "raw": RawSystem(settings, raw_url, walinspect),
        }


def run_round(args: argparse.Namespace, found: dict[str, System], number: int) -> dict[str, Any]:
    result: dict[str, Any] = {"round": number, "load_1m": round(os.getloadavg()[0], 2)}
    if "throughput" in args.only:
        for mode in args.modes:
            for label, name, variant in CONTENDERS[mode]:
                tag = f"{mode}-{variant}-{number}"
                common.note(f"round {number}: {mode} {label}")
                load = round(os.getloadavg()[0], 2)
                phase = {**found[name].throughput(mode, variant, tag), "load_1m": load}
                result.setdefault("throughput", {}).setdefault(mode, {})[label] = phase
                enqueued = phase.get("enqueue_s") or 0
                common.note(
                    f"  {phase['steps_per_s']:,.0f} steps/s"
                    + (
                        f" (the {phase['units']:,} enqueued in {enqueued:.1f} s)"
                        if enqueued
                        else ""
                    )
                )
    for workload in ("signals", "timers"):
        if workload not in args.only:
            continue
        for name, system in found.items():
            common.note(f"round {number}: {workload} {name}")
            run: Callable[[str], list[float]] = getattr(system, workload)
            summary = common.summary_ms(run(f"{workload[:3]}{number}"))
            result.setdefault(workload, {})[name] = summary
            common.note(f"  p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms")
    return result


# -- report ---------------------------------------------------------------------------------------


def spread(values: list[float | None]) -> str:
    """``median (min-max)`` of the values measured (``n/a`` if none was)."""

    def f(v: float) -> str:
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"

    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    if len(known) == 1:
        return f(known[0])
    return f"{f(statistics.median(known))} ({f(min(known))}-{f(max(known))})"


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def throughput_report(rounds: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    labels = [label for label, _, _ in CONTENDERS[mode]]
    per = {label: [r["throughput"][mode][label] for r in rounds] for label in labels}
    costs = [
        ("transactions/step", "xacts_per_step"),
        ("tuples written/step", "tuples_per_step"),
        ("WAL records/step", "wal_records_per_step"),
        ("WAL bytes/step w/o FPI", "wal_non_fpi_bytes_per_step"),
        ("FPI bytes/step", "wal_fpi_bytes_per_step"),
        ("PG CPU ms/step", "pg_cpu_ms_per_step"),
        ("worker CPU ms/step", "worker_cpu_ms_per_step"),
        ("worker RSS MB", "worker_rss_mb"),
        ("NOTIFY lock waiting", "notify_lock_waiting"),
        ("… of them workers", "notify_lock_waiting_workers"),
    ]
    common.table(
        f"Throughput, {mode}: {rounds[0]['throughput'][mode]['chimeway']['units']:,} two-step "
        f"units per phase; median (min-max) over {len(rounds)} round(s)",
        ["system", "steps/s", *(name for name, _ in costs)],
        [
            [label, spread([p["steps_per_s"] for p in per[label]])]
            + [spread([p[key] for p in per[label]]) for _, key in costs]
            for label in labels
        ],
    )
    ratios = {
        label: [
            c["steps_per_s"] / o["steps_per_s"]
            for c, o in zip(per["chimeway"], per[label], strict=True)
        ]
        for label in labels[1:]
    }
    for label, values in ratios.items():
        print(f"steps/s chimeway / {label}: {spread(values)} (same-round ratios)")
    return {
        "steps_per_s": {label: median([p["steps_per_s"] for p in per[label]]) for label in labels},
        "ratio_chimeway_to": {label: median(v) for label, v in ratios.items()},
        "costs": {
            label: {key: median([p[key] for p in per[label]]) for _, key in costs}
            for label in labels
        },
    }


def latency_report(rounds: list[dict[str, Any]], workload: str, title: str) -> dict[str, Any]:
    names = list(LATENCY_LABELS[workload])
    per = {name: [r[workload][name] for r in rounds] for name in names}
    common.table(
        f"{title}; median (min-max) over {len(rounds)} round(s)",
        ["measured", "n", "p50 ms", "p99 ms"],
        [
            [
                LATENCY_LABELS[workload][name],
                per[name][0]["n"],
                spread([s["p50_ms"] for s in per[name]]),
                spread([s["p99_ms"] for s in per[name]]),
            ]
            for name in names
        ],
    )
    out: dict[str, Any] = {"ratio_chimeway_to": {}}
    for name in names:
        out[name] = {q: median([s[q] for s in per[name]]) for q in ("p50_ms", "p99_ms")}
    for name in names[1:]:
        ratio = {
            q: [c[q] / o[q] for c, o in zip(per["chimeway"], per[name], strict=True)]
            for q in ("p50_ms", "p99_ms")
        }
        print(f"chimeway / {name}: p50 {spread(ratio['p50_ms'])}, p99 {spread(ratio['p99_ms'])}")
        out["ratio_chimeway_to"][name] = {q: median(v) for q, v in ratio.items()}
    return out


def main() -> None:
    args = parse_args()
    settings = Settings.from_args(args, args.database_url, VACUUMED[args.vacuum])
    with systems(args, settings) as found:
        rounds = [run_round(args, found, r) for r in range(1, args.rounds + 1)]
    print(
        "\n1-minute load at the start of each round: "
        + ", ".join(f"round {r['round']} {r['load_1m']}" for r in rounds)
    )
    summary: dict[str, Any] = {}
    if "throughput" in args.only:
        for mode in args.modes:
            summary[f"throughput_{mode}"] = throughput_report(rounds, mode)
        print(
            "(wall time: first enqueue, or the batch's commit, to the last completion in each "
            "system's own rows; WAL of each system's own database over the phase, full-page "
            "images apart: they follow checkpoints, which other databases' drops force)"
        )
    if "signals" in args.only:
        summary["signals"] = latency_report(
            rounds, "signals", f"Signal latency, {args.samples} samples at {args.rate:g}/s"
        )
    if "timers" in args.only:
        summary["timers"] = latency_report(
            rounds,
            "timers",
            f"Timer lateness, {args.samples} 1 s waits started at {args.rate:g}/s, "
            f"worker poll {args.poll_interval:g} s",
        )
    common.json_line(
        "peers",
        args.database_url,
        {
            "dbos": metadata.version("dbos"),
            "settings": {
                **{k: v for k, v in vars(settings).items() if k not in ("admin_url", "vacuum")},
                "vacuum": args.vacuum,
                "rounds": args.rounds,
                "modes": args.modes,
                "dbos_queue_poll": args.dbos_queue_poll,
            },
            "summary": summary,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
