"""What ``bench.peers`` shares between systems: worker processes of any system
(:class:`WorkerSet`), the costs of one measured phase on one system's own database
(:class:`Phase`) and the pacing of latency samples."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import common
from bench.common import Workers


@dataclass(frozen=True)
class Settings:
    """The options every system runs with in one ``bench.peers`` run."""

    admin_url: str
    n: int
    threads: int
    processes: int
    concurrency: int
    poll_interval: float
    log_level: str
    samples: int
    rate: float
    timeout: float
    vacuum: frozenset[str]  # the systems whose database is vacuumed before each phase

    @classmethod
    def from_args(cls, args: Any, admin_url: str, vacuum: frozenset[str]) -> Settings:
        """From a script's options (``--samples`` and ``--rate`` default to none)."""
        return cls(
            admin_url=admin_url,
            n=args.n,
            threads=args.threads,
            processes=args.processes,
            concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            log_level=args.log_level,
            samples=getattr(args, "samples", 0),
            rate=getattr(args, "rate", 0.0),
            timeout=args.timeout,
            vacuum=vacuum,
        )


# -- worker processes -------------------------------------------------------------------------


class PeerWorkers(Workers):
    """One worker process running ``command`` (another system's worker), ready when
    ``ready()`` is true; sampled and stopped like :class:`bench.common.Workers`."""

    def __init__(
        self,
        url: str,
        command: list[str],
        ready: Callable[[], bool],
        env: dict[str, str],
        label: str,
    ) -> None:
        super().__init__(url, processes=1, env=env, label=label)
        self._command = command
        self._ready = ready

    def command(self) -> list[str]:
        return self._command

    def registered(self) -> int:
        return 1 if self._ready() else 0


class WorkerSet:
    """The worker processes of one phase, started one after the other (each ready before the
    next starts) and always stopped."""

    def __init__(self, workers: Sequence[Workers]) -> None:
        self.workers = list(workers)

    def __enter__(self) -> WorkerSet:
        try:
            for worker in self.workers:
                worker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def cpu_seconds(self) -> float:
        return sum(w.cpu_seconds() for w in self.workers)

    def peak_rss_mb(self) -> float:
        return max((w.peak_rss_mb() for w in self.workers), default=0.0)

    def logs(self) -> str:
        return " ".join(str(w.log) for w in self.workers)


# -- costs of a phase ---------------------------------------------------------------------------


STATS = """
SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, sessions
FROM pg_stat_database WHERE datname = %s
"""
BACKENDS = """
SELECT pid FROM pg_stat_activity
WHERE datname = %s AND backend_type = 'client backend' AND pid <> %s
"""
OWN_WAL = """
WITH r AS (
    SELECT xid, record_length, fpi_length, block_ref
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), own_xids AS (
    SELECT DISTINCT xid::text AS xid FROM r WHERE block_ref LIKE %(pattern)s
), tagged AS (
    SELECT *, block_ref LIKE %(pattern)s OR xid::text IN (SELECT xid FROM own_xids) AS own
    FROM r
)
SELECT count(*) FILTER (WHERE own), coalesce(sum(record_length) FILTER (WHERE own), 0),
       coalesce(sum(fpi_length) FILTER (WHERE own), 0), count(*)
FROM tagged
"""


def install_walinspect(url: str) -> bool:
    """``pg_walinspect`` in the system's database (PostgreSQL 15+, superuser); False when
    unavailable (WAL then falls back to ``pg_stat_wal``, server-wide)."""
    try:
        common.scalar(url, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    except psycopg.Error:
        return False
    return True


def rows(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query.encode(), params).fetchall()


def vacuum(settings: Settings, system: str, url: str) -> None:
    """VACUUM the system's database outside the measured window when ``--vacuum`` names it.

    Raw Procrastinate keeps its finished jobs, which slow it down round after round unless
    vacuumed. A VACUUM of a nearly empty jobs table leaves statistics (a handful of rows per
    page) on which a cached generic plan of Procrastinate's fetch scans every waiting job;
    Chimeway pins that fetch to custom plans (migration 0003), so ``--vacuum all`` is fair
    too, but the default vacuums raw Procrastinate's database only, as earlier runs did."""
    if system in settings.vacuum:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM")


def backend_cpu(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend (this machine runs the server)."""
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            out[pid] = times.user + times.system
    return out


class Phase:
    """The costs of one measured phase on one system's own database:

    * transactions and tuples written (``pg_stat_database`` deltas, read once every backend
      of the phase has exited and flushed its counters; the phase's own completion polls,
      one autocommit transaction each, are subtracted);
    * PostgreSQL CPU of that database's client backends (psutil, sampled at completion while
      the backends are alive; ``backends_unmeasured`` counts sessions that came and went in
      between);
    * WAL of that database: ``pg_walinspect`` records over the phase's LSN range whose block
      references name the database, plus the records (commits) of their transactions (bytes
      include full-page images, given apart: a checkpoint in the phase adds them); or,
      without ``pg_walinspect``, the server's ``pg_stat_wal`` delta;
    * worker CPU (psutil) and peak RSS.

    Counters are flushed by each backend at most once a second, so the deltas also hold up
    to a second of the workers' idle polling on either side of the phase.

    Use: ``start(workers)`` before the first enqueue, ``poll()``/``wait()`` to wait,
    ``completed()`` once done, then stop the workers and close every client, then
    ``result()``."""

    def __init__(self, settings: Settings, url: str, walinspect: bool) -> None:
        self.url = url
        self.walinspect = walinspect
        self.dbname = conninfo_to_dict(url)["dbname"]
        self.admin_url = settings.admin_url
        self.admin = psycopg.connect(settings.admin_url, autocommit=True)
        self.conn: psycopg.Connection[Any] | None = None
        self.polls = 0
        self.slot = f"chimeway_bench_{uuid.uuid4().hex[:8]}"
        (self.oid,) = self._admin("SELECT oid FROM pg_database WHERE datname = %s", self.dbname)
        self.start_stats: tuple[int, int, int] = (0, 0, 0)

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, *_: object) -> None:
        if self.conn is not None:
            self.conn.close()
        self.admin.close()

    def _admin(self, query: str, *params: Any) -> Any:
        """The row a query on the server's maintenance database returns."""
        row = self.admin.execute(query.encode(), params).fetchone()
        assert row is not None
        return row

    def row(self, query: str, *params: Any) -> Any:
        """One autocommit query on the phase's own connection, opened by :meth:`start`
        (counted, then subtracted from the phase's transactions)."""
        assert self.conn is not None, "Phase.start() opens the connection"
        self.polls += 1
        return self.conn.execute(query.encode(), params).fetchone()

    def poll(self, query: str, *params: Any) -> Any:
        """The first column of :meth:`row`."""
        row = self.row(query, *params)
        return row[0] if row else None

    def wait(self, query: str, *params: Any, timeout: float, every: float, what: str) -> float:
        """Poll until ``query`` is true; the time just before the query that saw it."""
        deadline = time.monotonic() + timeout
        while True:
            before = time.time()
            if self.poll(query, *params):
                return before
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met within {timeout:.0f}s")
            time.sleep(every)

    def _backends(self) -> dict[int, float]:
        own = self.conn.info.backend_pid if self.conn is not None else 0
        pids = self.admin.execute(BACKENDS.encode(), [self.dbname, own])
        return backend_cpu([row[0] for row in pids.fetchall()])

    def _wal(self) -> tuple[str, int]:
        lsn, records = self._admin(
            "SELECT pg_current_wal_insert_lsn()::text, wal_records FROM pg_stat_wal"
        )
        return str(lsn), int(records)

    def start(self, workers: WorkerSet) -> None:
        self.workers = workers
        self.conn = psycopg.connect(self.url, autocommit=True)
        if self.walinspect:
            # A checkpoint (another database dropped, say) would recycle the phase's WAL
            # before it is read; a temporary slot of this session holds it until then.
            self._admin("SELECT pg_create_physical_replication_slot(%s, true, true)", self.slot)
        self.start_stats = self._admin(STATS, self.dbname)
        self.start_lsn, self.start_wal_records = self._wal()
        self.start_cpu = self._backends()
        self.start_worker_cpu = self.workers.cpu_seconds()
        self.notify_lock = common.NotifyLockWaiters(self.admin_url, self.dbname, 0.02)

    def completed(self) -> None:
        self.notify_lock.stop()
        self.end_lsn, self.end_wal_records = self._wal()
        self.end_cpu = self._backends()
        self.worker_cpu = self.workers.cpu_seconds() - self.start_worker_cpu

    def result(self, start: float, end: float, steps: int) -> dict[str, Any]:
        """Steps/s from ``start`` to ``end`` (epoch seconds, each system's own rows) and the
        per-step costs; call after the workers and every client of the phase stopped."""
        return {
            "steps": steps,
            "seconds": round(end - start, 3),
            "steps_per_s": round(steps / (end - start), 1),
            **self.finish(steps),
        }

    def finish(self, steps: int) -> dict[str, Any]:
        """Per-step costs; call after the workers and every client of the phase stopped."""
        assert self.conn is not None
        self.conn.close()
        common.wait_for(
            lambda: (
                not self._admin(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'client backend'",
                    self.dbname,
                )[0]
            ),
            timeout=30,
            what="the phase's backends exited",
        )
        xacts, tuples, sessions = (
            b - a for a, b in zip(self.start_stats, self._admin(STATS, self.dbname), strict=True)
        )
        pg_cpu = sum(cpu - self.start_cpu.get(pid, 0.0) for pid, cpu in self.end_cpu.items())
        new_backends = len(set(self.end_cpu) - set(self.start_cpu))
        out: dict[str, Any] = {
            "xacts_per_step": round((xacts - self.polls) / steps, 2),
            "tuples_per_step": round(tuples / steps, 2),
            "pg_cpu_ms_per_step": round(1000 * pg_cpu / steps, 3),
            "worker_cpu_ms_per_step": round(1000 * self.worker_cpu / steps, 3),
            "worker_rss_mb": round(self.workers.peak_rss_mb(), 1),
            "backends_unmeasured": max(0, sessions - new_backends),
            "completion_polls": self.polls,
            # Mean sessions waiting for the NOTIFY commit lock (bench.common), sampled every
            # 20 ms: the workers' (PGAPPNAME bench-worker) and all.
            "notify_lock_waiting_workers": self.notify_lock.mean(common.WORKER_APP_NAME),
            "notify_lock_waiting": self.notify_lock.mean(),
        }
        out.update(self._own_wal(steps))
        return out

    def _own_wal(self, steps: int) -> dict[str, Any]:
        if not self.walinspect:
            records = self.end_wal_records - self.start_wal_records
            (size,) = self._admin(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                self.end_lsn,
                self.start_lsn,
            )
            return {
                "wal_source": "pg_stat_wal (server-wide)",
                "wal_bytes_per_step": round(size / steps),
                "wal_non_fpi_bytes_per_step": None,  # pg_stat_wal counts images, not their bytes
                "wal_fpi_bytes_per_step": None,
                "wal_records_per_step": round(records / steps, 1),
            }
        common.wait_for(
            lambda: self._admin("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", self.end_lsn)[0],
            timeout=10,
            what="WAL flushed",
        )
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                OWN_WAL.encode(),
                {"start": self.start_lsn, "end": self.end_lsn, "pattern": f"%/{self.oid}/%"},
            ).fetchone()
        self._admin("SELECT pg_drop_replication_slot(%s)", self.slot)
        assert row is not None
        records, size, fpi, server_records = row
        return {
            "wal_source": "pg_walinspect (own database)",
            "wal_bytes_per_step": round(size / steps),
            "wal_non_fpi_bytes_per_step": round((size - fpi) / steps),
            "wal_fpi_bytes_per_step": round(fpi / steps),
            "wal_records_per_step": round(records / steps, 1),
            "server_wal_records_per_step": round(server_records / steps, 1),
        }


# -- latency samples ----------------------------------------------------------------------------


def paced(n: int, rate: float) -> Iterator[int]:
    """0 .. n-1, the i-th yielded at ``i / rate`` seconds after the first."""
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i
