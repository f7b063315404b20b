"""DBOS Transact, as ``bench.peers`` runs it: one launched DBOS process per command,
``python -m bench.peers_dbos_app --executor-id w0 --queues bench --ready-file PATH``, on
``$BENCH_DATABASE_URL`` (a database holding only DBOS's system schema, migrated beforehand).

The process launches DBOS, listens to the queues named (none: it dequeues nothing), creates
``--ready-file`` and runs until SIGTERM. With ``--direct TAG FIRST COUNT``, SIGUSR1 makes it
start ``COUNT`` two-step workflows itself with ``DBOS.start_workflow`` (ids ``TAG-FIRST``
...), as an application calling DBOS directly.

Workflows:

* ``bench_two_step(i)``: two no-op ``@DBOS.step``s (each checkpoints its output);
* ``bench_wait_signal()``: ``DBOS.recv(TOPIC)``, returns ``time.time()`` at the next line;
* ``bench_sleep(seconds)``: ``DBOS.sleep(seconds)``, returns ``time.time()`` at the next line.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from dbos import DBOS, SetWorkflowID

APP_NAME = "chimeway_bench"
TOPIC = "bench.go"
TWO_STEP = "bench_two_step"
WAIT_SIGNAL = "bench_wait_signal"
SLEEP = "bench_sleep"


@DBOS.step(name="bench_noop_1")
def noop_1(i: int) -> None:
    return None


@DBOS.step(name="bench_noop_2")
def noop_2(i: int) -> None:
    return None


@DBOS.workflow(name=TWO_STEP)
def two_step(i: int) -> None:
    noop_1(i)
    noop_2(i)


@DBOS.workflow(name=WAIT_SIGNAL)
def wait_signal() -> float:
    DBOS.recv(TOPIC, timeout_seconds=3600)
    return time.time()


@DBOS.workflow(name=SLEEP)
def sleep(seconds: float) -> float:
    DBOS.sleep(seconds)
    return time.time()


def start_direct(tag: str, first: int, count: int) -> None:
    for i in range(first, first + count):
        with SetWorkflowID(f"{tag}-{i}"):
            DBOS.start_workflow(two_step, i)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--executor-id", required=True)
    p.add_argument("--queues", default="", help="comma-separated queue names to dequeue from")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--direct", nargs=3, metavar=("TAG", "FIRST", "COUNT"), help="start on SIGUSR1")
    args = p.parse_args()
    # Blocked before DBOS starts its threads (they inherit the mask): sigwait takes them.
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    DBOS(
        config={
            "name": APP_NAME,
            "system_database_url": os.environ["BENCH_DATABASE_URL"],
            "executor_id": args.executor_id,
            "application_version": "bench",
        }
    )
    DBOS.listen_queues([q for q in args.queues.split(",") if q])
    DBOS.launch()
    Path(args.ready_file).touch()
    while signal.sigwait(signals) == signal.SIGUSR1:
        if args.direct:
            tag, first, count = args.direct
            start_direct(tag, int(first), int(count))
    DBOS.destroy(workflow_completion_timeout_sec=5)


if __name__ == "__main__":
    main()
