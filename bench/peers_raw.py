"""Raw Procrastinate's side of ``bench.peers``: ``--processes`` ``run_worker`` processes
(``bench.peers_raw_app``, same concurrency and poll interval as Chimeway's worker, LISTEN/NOTIFY
on) on a database holding only Procrastinate's schema.

* Throughput: ``bench.chain1`` defers ``bench.chain2``: two jobs per unit. ``single``: N
  defers (one transaction each, the App's own sync connector) from ``threads`` threads,
  timed from the first; ``fanout``: one ``batch_defer`` of N jobs, timed from its return
  (its commit). Variant ``keep``: Procrastinate's default ``delete_jobs="never"``, timed to
  the last ``succeeded`` event (``procrastinate_events.at``); ``delete``:
  ``delete_jobs="successful"`` as Chimeway's worker runs, which deletes the events with the
  jobs, so timed to the first poll (every 20 ms) that sees every job created and gone.
* Signals: ``bench.stamp`` deferred (committed on return) -> its first line.
* Timers: ``bench.stamp`` deferred with ``schedule_at`` = now + 1 s; lateness = its first
  line minus that time.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import bench_app, common
from bench.peers_phase import PeerWorkers, Phase, Settings, WorkerSet, paced, rows, vacuum
from bench.peers_raw_app import build

LAST_ID = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM procrastinate_jobs_id_seq"
ALL_GONE = f"SELECT ({LAST_ID}) >= %s AND NOT EXISTS (SELECT FROM procrastinate_jobs WHERE id > %s)"
ALL_SUCCEEDED = (
    "SELECT count(*) >= %s FROM procrastinate_jobs WHERE id > %s AND status = 'succeeded'"
)


class RawSystem:
    """Raw Procrastinate on its database; creating it applies Procrastinate's schema."""

    def __init__(self, settings: Settings, url: str, walinspect: bool) -> None:
        self.settings = settings
        self.url = url
        self.walinspect = walinspect
        app = build(url, sync=True)
        with app.open():
            app.schema_manager.apply_schema()
        common.scalar(url, bench_app.STAMPS_DDL)

    def _workers(self, tag: str, delete_jobs: str) -> WorkerSet:
        s = self.settings
        # Workers that were killed leave their row; each new worker registers one.
        common.scalar(self.url, "DELETE FROM procrastinate_workers")
        command = [
            sys.executable, "-m", "bench.peers_raw_app",
            "--concurrency", str(s.concurrency),
            "--poll-interval", str(s.poll_interval),
            "--delete-jobs", delete_jobs,
        ]  # fmt: skip
        env = {"BENCH_DATABASE_URL": self.url}
        return WorkerSet(
            [
                PeerWorkers(
                    self.url,
                    command,
                    functools.partial(self._registered, k + 1),
                    env=env,
                    label=f"peers-raw-{tag}-{k}",
                )
                for k in range(s.processes)
            ]
        )

    def _registered(self, count: int) -> bool:
        return bool(
            common.scalar(self.url, "SELECT count(*) >= %s FROM procrastinate_workers", [count])
        )

    def throughput(self, mode: str, variant: str, tag: str) -> dict[str, Any]:
        s, n = self.settings, self.settings.n
        delete = variant == "delete"
        vacuum(self.settings, "raw", self.url)
        with Phase(s, self.url, self.walinspect) as phase:
            app = build(self.url, sync=True)
            with app.open(), self._workers(tag, "successful" if delete else "never") as workers:
                chain1 = app.tasks["bench.chain1"]
                last = common.scalar(self.url, LAST_ID)
                phase.start(workers)
                start = time.time()
                produced = 0.0
                if mode == "single":
                    with ThreadPoolExecutor(s.threads) as pool:
                        list(pool.map(lambda i: chain1.defer(i=i), range(n)))
                    produced = time.time() - start
                else:
                    jobs: list[dict[str, Any]] = [{"i": i} for i in range(n)]
                    chain1.batch_defer(*jobs)
                    start = time.time()
                if delete:
                    end = phase.wait(
                        ALL_GONE,
                        last + 2 * n,
                        last,
                        timeout=s.timeout,
                        every=0.02,
                        what=f"{2 * n} jobs done",
                    )
                else:
                    phase.wait(
                        ALL_SUCCEEDED,
                        2 * n,
                        last,
                        timeout=s.timeout,
                        every=0.1,
                        what=f"{2 * n} jobs succeeded",
                    )
                    end = phase.poll(
                        "SELECT extract(epoch FROM max(e.at))::float8 FROM procrastinate_events e "
                        "JOIN procrastinate_jobs j ON j.id = e.job_id "
                        "WHERE j.id > %s AND e.type = 'succeeded'",
                        last,
                    )
                phase.completed()
            return {"units": n, "enqueue_s": round(produced, 3), **phase.result(start, end, 2 * n)}

    def signals(self, tag: str) -> list[float]:
        s, n = self.settings, self.settings.samples
        vacuum(self.settings, "raw", self.url)
        app = build(self.url, sync=True)
        with app.open(), self._workers(tag, "never"):
            stamp = app.tasks["bench.stamp"]
            time.sleep(1.0)  # let the workers go idle
            committed = {}
            for i in paced(n, s.rate):
                stamp.defer(kind=tag, seq=i)
                committed[i] = time.time()
            started = self._stamps(tag, n)
        return [started[i] - committed[i] for i in started]

    def timers(self, tag: str) -> list[float]:
        s, n = self.settings, self.settings.samples
        vacuum(self.settings, "raw", self.url)
        app = build(self.url, sync=True)
        with app.open(), self._workers(tag, "never"):
            stamp = app.tasks["bench.stamp"]
            due = {}
            for i in paced(n, s.rate):
                due[i] = time.time() + 1.0
                at = dt.datetime.fromtimestamp(due[i], dt.UTC)
                stamp.configure(schedule_at=at).defer(kind=tag, seq=i)
            started = self._stamps(tag, n)
        return [started[i] - due[i] for i in started]

    def _stamps(self, tag: str, n: int) -> dict[int, float]:
        common.wait_for(
            lambda: common.scalar(
                self.url, "SELECT count(*) >= %s FROM bench_stamps WHERE kind = %s", [n, tag]
            ),
            self.settings.timeout,
            every=0.2,
            what=f"{n} stamps",
        )
        found = rows(self.url, "SELECT seq, started FROM bench_stamps WHERE kind = %s", [tag])
        return dict(found)
