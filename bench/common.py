"""Shared helpers of the benchmark scripts: a fresh database per run, real ``chimeway worker``
subprocesses (started and stopped with bounded waits, RSS sampled with psutil), percentiles,
a readable table and the final JSON line."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chimeway import migrations

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
APP = "bench.bench_app:build"
#: The ``application_name`` of the bench workers' sessions (:class:`Workers` sets PGAPPNAME).
WORKER_APP_NAME = "bench-worker"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL),
        help="a server URL; its database is only used to create and drop the bench database",
    )
    p.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    return p


def worker_options(p: argparse.ArgumentParser, processes: int) -> None:
    p.add_argument("--processes", type=int, default=processes)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--log-level", default="INFO", help="the workers' --log-level")
    p.add_argument(
        "--no-waker",
        action="store_true",
        help="workers without the due-time waker (scheduled jobs start at the next poll)",
    )


# -- databases ------------------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextlib.contextmanager
def fresh_database(url: str, name: str, keep: bool = False) -> Iterator[str]:
    """A new database on ``url``'s server, migrated by ``chimeway.migrations.migrate``; dropped
    on exit (also on failure) unless ``keep``."""
    dbname = f"chimeway_bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    target = with_dbname(url, dbname)
    try:
        migrations.migrate(target)
        yield target
    finally:
        if keep:
            print(f"kept database {dbname}", file=sys.stderr)
        else:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(dbname)
                    )
                )


@contextlib.contextmanager
def empty_database(url: str, name: str, keep: bool = False) -> Iterator[str]:
    """A new empty database on ``url``'s server (for a system that installs its own schema);
    dropped on exit (also on failure) unless ``keep``."""
    dbname = f"chimeway_bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield with_dbname(url, dbname)
    finally:
        if keep:
            print(f"kept database {dbname}", file=sys.stderr)
        else:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(dbname)
                    )
                )


def scalar(url: str, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        row = cur.fetchone() if cur.description else None
    return row[0] if row else None


def wait_for(
    predicate: Callable[[], Any], timeout: float, every: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until truthy; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout:.0f}s")
        time.sleep(every)


# -- worker subprocesses ----------------------------------------------------------------------


class Workers:
    """``chimeway worker --app bench.bench_app:build`` as a real subprocess (with
    ``--processes N`` it supervises N children). Use as a context manager: always stopped."""

    def __init__(
        self,
        url: str,
        *,
        processes: int = 2,
        concurrency: int = 10,
        poll_interval: float = 1.0,
        log_level: str = "INFO",
        waker: bool = True,
        env: dict[str, str] | None = None,
        label: str = "worker",
        prefix: Sequence[str] = (),
        admin_url: str | None = None,
    ) -> None:
        """``prefix``: run the command under it (``ip netns exec <host>``: a worker on
        another host, which reaches the database at ``url``; this process reads the worker
        table at ``admin_url``)."""
        self.url = url
        self.admin_url = admin_url or url
        self.prefix = list(prefix)
        self.processes = processes
        self.args = [
            "--processes",
            str(processes),
            "--concurrency",
            str(concurrency),
            "--poll-interval",
            str(poll_interval),
            "--log-level",
            log_level,
            *([] if waker else ["--no-waker"]),
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
        self.env.update(
            {
                "CHIMEWAY_DATABASE_URL": url,
                "PYTHONPATH": str(ROOT),
                # The workers' sessions, apart in pg_stat_activity and the server log.
                "PGAPPNAME": WORKER_APP_NAME,
                **(env or {}),
            }
        )
        fd, path = tempfile.mkstemp(prefix=f"chimeway-bench-{label}-", suffix=".log")
        os.close(fd)
        self.log = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss: dict[int, int] = {}
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @classmethod
    def from_args(
        cls, url: str, args: argparse.Namespace, label: str, env: dict[str, str] | None = None
    ) -> Workers:
        """Workers configured by the options :func:`worker_options` added."""
        return cls(
            url,
            processes=args.processes,
            concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            log_level=args.log_level,
            waker=not getattr(args, "no_waker", False),
            env=env,
            label=label,
        )

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        try:
            wait_for(
                lambda: proc.poll() is not None or self.registered() >= self.processes,
                timeout=timeout,
                what="workers registered",
            )
        except TimeoutError:
            self.stop()
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{self.tail()}")
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def command(self) -> list[str]:
        """The command line started (``bench.peers`` starts other systems' workers)."""
        return [
            *self.prefix,
            sys.executable,
            "-m",
            "chimeway.cli",
            "worker",
            "--app",
            APP,
            *self.args,
        ]

    def registered(self) -> int:
        return int(scalar(self.admin_url, "SELECT count(*) FROM procrastinate_workers") or 0)

    def pids(self) -> list[int]:
        """The worker processes doing the work (the children, or the one process)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children] or [parent.pid]

    def _sample(self) -> None:
        while not self._sampling.is_set():
            for pid in self.pids():
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(pid).memory_info().rss
                    self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
            self._sampling.wait(0.25)

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def peak_rss_mb(self) -> float:
        return max(self.peak_rss.values(), default=0) / 2**20

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the supervisor forwards it), a bounded wait, then SIGKILL of the
        processes this object started (by pid)."""
        self._sampling.set()
        proc = self.proc
        if proc is None:
            return None
        children = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            code = proc.wait(timeout=10)
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()
        return code

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- statistics and output --------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations given in seconds, in milliseconds."""
    return {
        "n": len(values_s),
        "p50_ms": round(percentile(values_s, 50) * 1000, 2),
        "p95_ms": round(percentile(values_s, 95) * 1000, 2),
        "p99_ms": round(percentile(values_s, 99) * 1000, 2),
        "max_ms": round(max(values_s, default=math.nan) * 1000, 2),
    }


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


def machine(url: str) -> dict[str, Any]:
    from importlib import metadata

    import procrastinate  # noqa: F401  (version below)

    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "postgres": scalar(url, "SHOW server_version"),
        "procrastinate": metadata.version("procrastinate"),
        "psycopg": metadata.version("psycopg"),
    }


def json_line(bench: str, url: str, results: dict[str, Any]) -> None:
    """The one machine-readable line every script ends with."""
    print(json.dumps({"bench": bench, "machine": machine(url), **results}, default=str))


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the NOTIFY commit lock --------------------------------------------------------------------

#: Sessions of a database waiting for the lock every notifying commit takes, by
#: ``application_name``: PostgreSQL serialises commits that ran NOTIFY (``LockSharedObject``
#: on ``pg_database``, object 0, held through the commit's WAL flush), and every job
#: Procrastinate defers notifies. Its wait event is ``Lock``/``object``.
NOTIFY_LOCK_WAITERS = """
SELECT coalesce(application_name, ''), count(*)
FROM pg_stat_activity
WHERE datname = %s AND pid <> pg_backend_pid()
  AND wait_event_type = 'Lock' AND wait_event = 'object'
GROUP BY 1
"""


class NotifyLockWaiters:
    """Samples, every ``every`` seconds until :meth:`stop`, how many sessions of database
    ``dbname`` wait for the NOTIFY commit lock; :meth:`mean` is the mean number waiting, per
    ``application_name`` (``bench-worker``, ``bench-producer``...) or in all."""

    def __init__(self, url: str, dbname: str, every: float = 0.005) -> None:
        self.samples = 0
        self.waiting: dict[str, int] = {}
        #: The sampler's own thread and server process, for CPU counts that leave it out.
        self.thread_id = 0
        self.backend_pid = 0
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, dbname, every), daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _run(self, url: str, dbname: str, every: float) -> None:
        self.thread_id = threading.get_native_id()
        with psycopg.connect(url, autocommit=True) as conn:
            self.backend_pid = conn.info.backend_pid
            self._started.set()
            while not self._stop.wait(every):
                for name, count in conn.execute(NOTIFY_LOCK_WAITERS.encode(), [dbname]):
                    self.waiting[name] = self.waiting.get(name, 0) + int(count)
                self.samples += 1

    def stop(self) -> NotifyLockWaiters:
        self._stop.set()
        self._thread.join()
        return self

    def mean(self, name: str | None = None) -> float:
        total = sum(n for k, n in self.waiting.items() if name is None or k == name)
        return round(total / max(self.samples, 1), 2)


# -- raw Procrastinate ------------------------------------------------------------------------


def raw_defer(
    conn: psycopg.Connection[Any], task: str, kwargs: Sequence[dict[str, Any]], **options: Any
) -> list[int]:
    """Defer ``task`` jobs on the bench queue through ``conn`` (in its transaction), one round
    trip, with Procrastinate's own API on a never-opened sync App (as Chimeway does)."""
    from bench.bench_app import RAW_QUEUE

    deferrer = _defer_app().configure_task(task, queue=RAW_QUEUE, connection=conn, **options)
    return deferrer.batch_defer(*kwargs)


@functools.cache
def _defer_app() -> Any:
    import procrastinate

    return procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


def postgres_cpu_by_pid() -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL server process on this machine."""
    found = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] in ("postgres", "postmaster") and proc.info["cpu_times"]:
            found[proc.pid] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return found


class CpuSplit:
    """CPU seconds spent between :meth:`start` and :meth:`stop` by this process (the client:
    every thread but ``skip_thread``) and by the PostgreSQL server processes of this machine
    (every one but ``skip_pid``; one that exits in between is not counted, so keep the
    measured connections open until :meth:`stop`); and ``steal``, the share of the
    machine's CPU time the hypervisor gave to others over the block (``/proc/stat``), which
    no figure of a process shows but which slows every one of them."""

    def __init__(self, skip_thread: int = 0, skip_pid: int = 0) -> None:
        self.skip_thread, self.skip_pid = skip_thread, skip_pid
        self.client = self.server = self.steal = 0.0

    def _client(self) -> float:
        me = psutil.Process()
        skipped = sum(t.user_time + t.system_time for t in me.threads() if t.id == self.skip_thread)
        times = me.cpu_times()
        return times.user + times.system - skipped

    def start(self) -> CpuSplit:
        self._client0, self._server0 = self._client(), postgres_cpu_by_pid()
        self._machine0 = psutil.cpu_times()
        return self

    def stop(self) -> CpuSplit:
        self.client = self._client() - self._client0
        self.server = sum(
            cpu - self._server0.get(pid, 0.0)
            for pid, cpu in postgres_cpu_by_pid().items()
            if pid != self.skip_pid
        )
        spent = [_machine_time(t) for t in (self._machine0, psutil.cpu_times())]
        total = spent[1][0] - spent[0][0]
        self.steal = (spent[1][1] - spent[0][1]) / total if total > 0 else 0.0
        return self


def _machine_time(times: Any) -> tuple[float, float]:
    """All CPU time of the machine and its stolen part, from ``psutil.cpu_times()`` (guest
    time is already counted in user time on Linux, so it is left out of the total)."""
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return sum(times) - guest, getattr(times, "steal", 0.0)


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by the PostgreSQL server processes on this machine (backends
    that exited since are not counted; pooled connections live through a phase)."""
    return sum(postgres_cpu_by_pid().values())


def wal_records(url: str) -> int | None:
    """WAL records written so far by the whole server (``pg_stat_wal``, PostgreSQL 14+)."""
    try:
        value = scalar(url, "SELECT wal_records FROM pg_stat_wal")
    except psycopg.Error:
        return None
    return int(value)


class CpuMeter:
    """Over one phase: the machine's CPU busy fraction, the workers' CPU seconds, the
    PostgreSQL server's CPU seconds (both are on this machine) and, given ``url``, the WAL
    records the server wrote (server-wide: like the CPU, an upper bound)."""

    def __init__(self, workers: Workers | None = None, url: str | None = None) -> None:
        self.workers = workers
        self.url = url
        self._machine = psutil.cpu_times()
        self._workers = workers.cpu_seconds() if workers else 0.0
        self._postgres = postgres_cpu_seconds()
        self._wal = wal_records(url) if url else None

    def read(self) -> dict[str, float]:
        now = psutil.cpu_times()
        busy = sum(now) - now.idle - (sum(self._machine) - self._machine.idle)
        total = sum(now) - sum(self._machine)
        out = {"machine_busy": round(busy / total, 3) if total else math.nan}
        if self.workers:
            out["worker_cpu_s"] = round(self.workers.cpu_seconds() - self._workers, 2)
        out["postgres_cpu_s"] = round(postgres_cpu_seconds() - self._postgres, 2)
        wal = wal_records(self.url) if self.url else None
        if wal is not None and self._wal is not None:
            out["wal_records"] = wal - self._wal
        return out
