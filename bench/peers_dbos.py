"""DBOS Transact's side of ``bench.peers``: ``--processes`` launched DBOS processes
(``bench.peers_dbos_app``) on a database holding only DBOS's system schema (``DBOS.migrate``).

* Throughput: ``bench_two_step`` (two no-op ``@DBOS.step``s). ``queue``: enqueued with
  ``DBOSClient.enqueue`` on the queue ``bench`` (``worker_concurrency`` = ``--concurrency``,
  polled every ``dbos_queue_poll`` s): ``single`` from ``threads`` threads, timed from the
  first enqueue; ``fanout`` as one batch (``enqueue_in_transaction`` N times, one commit),
  timed from its commit. ``direct``: each process calls ``DBOS.start_workflow`` for its
  share (DBOS defaults, no queue), timed from the first ``created_at``. Until the last
  ``workflow_status.completed_at``.
* Signals: N ``bench_wait_signal`` workflows wait in ``DBOS.recv``; ``DBOSClient.send``
  return -> the line after ``recv`` (the workflow's output).
* Timers: ``bench_sleep(1)`` workflows; lateness = the line after ``DBOS.sleep`` (the output)
  minus the wake time DBOS recorded for the sleep (its step output).
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, EnqueueOptions
from psycopg.conninfo import conninfo_to_dict

from bench import common
from bench.peers_dbos_app import APP_NAME, SLEEP, TOPIC, TWO_STEP, WAIT_SIGNAL
from bench.peers_phase import PeerWorkers, Phase, Settings, WorkerSet, paced, vacuum

QUEUE = "bench"
WAIT_QUEUE = "bench_wait"
SUCCEEDED = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
SUCCEEDED_AT_LEAST = "SELECT count(*) >= %s FROM dbos.workflow_status WHERE status = 'SUCCESS'"


def sqlalchemy_url(conninfo: str) -> str:
    """The URL DBOS takes for the database a libpq conninfo names."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    return sa.URL.create(
        "postgresql",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(params["port"]) if "port" in params else None,
        database=params.get("dbname"),
    ).render_as_string(hide_password=False)


def options(workflow: str, queue: str, workflow_id: str) -> EnqueueOptions:
    return {"workflow_name": workflow, "queue_name": queue, "workflow_id": workflow_id}


class DbosSystem:
    """DBOS on its database; creating it migrates the system schema and registers the
    queues."""

    def __init__(self, settings: Settings, url: str, walinspect: bool, queue_poll: float):
        self.settings = settings
        self.url = url
        self.walinspect = walinspect
        self.dbos_url = sqlalchemy_url(url)
        DBOS.migrate(self.dbos_url)
        client = self._client()
        try:
            client.register_queue(
                QUEUE, worker_concurrency=settings.concurrency, polling_interval_sec=queue_poll
            )
            client.register_queue(WAIT_QUEUE, polling_interval_sec=queue_poll)
        finally:
            client.destroy()

    def _client(self, pool_size: int = 2) -> DBOSClient:
        return DBOSClient(
            system_database_url=self.dbos_url,
            application_name=APP_NAME,
            system_database_pool_size=pool_size,
        )

    def _workers(
        self, tag: str, queues: str, ready_dir: str, direct: int | None = None
    ) -> WorkerSet:
        processes = self.settings.processes
        workers = []
        for k in range(processes):
            ready = Path(ready_dir) / f"ready-{k}"
            command = [
                sys.executable, "-m", "bench.peers_dbos_app",
                "--executor-id", f"{tag}-{k}",
                "--queues", queues,
                "--ready-file", str(ready),
            ]  # fmt: skip
            if direct is not None:  # this process's share of the ids
                first, count = k * direct // processes, (k + 1) * direct // processes
                command += ["--direct", tag, str(first), str(count - first)]
            workers.append(
                PeerWorkers(
                    self.url,
                    command,
                    ready.exists,
                    env={"BENCH_DATABASE_URL": self.dbos_url},
                    label=f"peers-dbos-{tag}-{k}",
                )
            )
        return WorkerSet(workers)

    def throughput(self, mode: str, variant: str, tag: str) -> dict[str, Any]:
        s, n = self.settings, self.settings.n
        vacuum(self.settings, "dbos", self.url)
        with (
            Phase(s, self.url, self.walinspect) as phase,
            tempfile.TemporaryDirectory() as ready_dir,
        ):
            client = self._client(s.threads + 1)
            engine = sa.create_engine(
                sa.make_url(self.dbos_url).set(drivername="postgresql+psycopg")
            )
            try:
                direct = n if variant == "direct" else None
                queues = "" if direct else QUEUE
                with self._workers(tag, queues, ready_dir, direct) as workers:
                    done0 = common.scalar(self.url, SUCCEEDED)
                    phase.start(workers)
                    start: float | None = None
                    produced = 0.0
                    if direct:
                        for worker in workers.workers:
                            assert worker.proc is not None
                            worker.proc.send_signal(signal.SIGUSR1)
                    elif mode == "single":
                        start = time.time()

                        def one(i: int) -> None:
                            client.enqueue(options(TWO_STEP, QUEUE, f"{tag}-{i}"), i)

                        with ThreadPoolExecutor(s.threads) as pool:
                            list(pool.map(one, range(n)))
                        produced = time.time() - start
                    else:
                        with engine.begin() as conn:
                            for i in range(n):
                                client.enqueue_in_transaction(
                                    conn, options(TWO_STEP, QUEUE, f"{tag}-{i}"), i
                                )
                        start = time.time()
                    phase.wait(
                        SUCCEEDED_AT_LEAST,
                        done0 + n,
                        timeout=s.timeout,
                        every=0.1,
                        what=f"{n} workflows succeeded",
                    )
                    phase.completed()
                    first, end, done = phase.row(
                        "SELECT min(created_at) / 1000.0, max(completed_at) / 1000.0, "
                        "count(*) FILTER (WHERE status = 'SUCCESS') "
                        "FROM dbos.workflow_status WHERE workflow_uuid LIKE %s",
                        f"{tag}-%",
                    )
            finally:
                client.destroy()
                engine.dispose()
            return {
                "units": n,
                "enqueue_s": round(produced, 3),
                **phase.result(start or float(first), float(end), 2 * done),
            }

    def signals(self, tag: str) -> list[float]:
        s, n = self.settings, self.settings.samples
        vacuum(self.settings, "dbos", self.url)
        with tempfile.TemporaryDirectory() as ready_dir, self._workers(tag, WAIT_QUEUE, ready_dir):
            client = self._client()
            try:
                for i in range(n):
                    client.enqueue(options(WAIT_SIGNAL, WAIT_QUEUE, f"{tag}-{i}"))
                # recv records its timeout (a DBOS.sleep step) once it waits.
                common.wait_for(
                    lambda: common.scalar(
                        self.url,
                        "SELECT count(*) >= %s FROM dbos.operation_outputs "
                        "WHERE function_name = 'DBOS.sleep' AND workflow_uuid LIKE %s",
                        [n, f"{tag}-%"],
                    ),
                    s.timeout,
                    every=0.2,
                    what=f"{n} workflows waiting in recv",
                )
                time.sleep(1.0)  # let the workers go idle
                committed = {}
                for i in paced(n, s.rate):
                    client.send(f"{tag}-{i}", "go", TOPIC)
                    committed[f"{tag}-{i}"] = time.time()
                statuses = self._finished(client, tag, n)
            finally:
                client.destroy()
        return [float(w.output) - committed[w.workflow_id] for w in statuses]

    def timers(self, tag: str) -> list[float]:
        s, n = self.settings, self.settings.samples
        vacuum(self.settings, "dbos", self.url)
        with tempfile.TemporaryDirectory() as ready_dir, self._workers(tag, WAIT_QUEUE, ready_dir):
            client = self._client()
            try:
                for i in paced(n, s.rate):
                    client.enqueue(options(SLEEP, WAIT_QUEUE, f"{tag}-{i}"), 1.0)
                statuses = self._finished(client, tag, n)
                late = []
                for w in statuses:
                    (due,) = (
                        step["output"]
                        for step in client.list_workflow_steps(w.workflow_id)
                        if step["function_name"] == "DBOS.sleep"
                    )
                    assert due is not None
                    late.append(float(w.output) - float(due))
            finally:
                client.destroy()
        return late

    def _finished(self, client: DBOSClient, tag: str, n: int) -> list[Any]:
        common.wait_for(
            lambda: common.scalar(
                self.url,
                "SELECT count(*) >= %s FROM dbos.workflow_status "
                "WHERE status = 'SUCCESS' AND workflow_uuid LIKE %s",
                [n, f"{tag}-%"],
            ),
            self.settings.timeout,
            every=0.2,
            what=f"{n} workflows succeeded",
        )
        return client.list_workflows(workflow_id_prefix=f"{tag}-", load_input=False)
