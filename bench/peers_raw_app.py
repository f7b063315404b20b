"""Raw Procrastinate, as ``bench.peers`` runs it: one ``run_worker`` process per command,
``python -m bench.peers_raw_app --concurrency 10 --poll-interval 1.0 --delete-jobs never``,
on ``$BENCH_DATABASE_URL`` (a database holding only Procrastinate's schema).

Tasks (sync, like Chimeway's, on one queue):

* ``bench.chain1(i)`` defers ``bench.chain2(i)``; ``bench.chain2`` does nothing: a
  two-step unit is two jobs;
* ``bench.stamp(kind, seq)`` records ``time.time()`` at its first line into ``bench_stamps``
  (``bench_app.STAMPS_DDL``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import procrastinate

QUEUE = "bench_raw"


def build(url: str, sync: bool = False) -> procrastinate.App:
    """The raw App on ``url``: an async connector for a worker, a sync one (``sync``) for a
    process that only defers."""
    connector: Any = (
        procrastinate.SyncPsycopgConnector(conninfo=url, min_size=1, max_size=8)
        if sync
        else procrastinate.PsycopgConnector(conninfo=url)
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="bench.chain2", queue=QUEUE)
    def chain2(i: int) -> None:
        return None

    @app.task(name="bench.chain1", queue=QUEUE)
    def chain1(i: int) -> None:
        chain2.defer(i=i)

    @app.task(name="bench.stamp", queue=QUEUE)
    def stamp(kind: str, seq: int) -> None:
        started = time.time()
        app.connector.get_sync_connector().execute_query(
            "INSERT INTO bench_stamps (kind, seq, started) VALUES (%(kind)s, %(seq)s, %(started)s)",
            kind=kind,
            seq=seq,
            started=started,
        )

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--delete-jobs", choices=["never", "successful"], default="never")
    args = p.parse_args()
    build(os.environ["BENCH_DATABASE_URL"]).run_worker(
        concurrency=args.concurrency,
        fetch_job_polling_interval=args.poll_interval,
        listen_notify=True,
        delete_jobs=args.delete_jobs,
    )


if __name__ == "__main__":
    main()
