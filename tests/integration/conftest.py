"""Fixtures for engine tests, with recording adapters.

Most tests run inside a transaction that is rolled back at the end: ``tx_cw`` (or
``make_tx_cw(**options)``) is a Chimeway on the session's shared database whose calls all
take ``conn=db``, and ``chimeway.testing.drain(cw, conn=db)`` runs the jobs in that same
transaction. Tests that need commits (LISTEN/NOTIFY, several connections, real workers,
concurrency) use ``cw`` / ``make_cw`` on a fresh database of their own (``committed_db``)."""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import uvicorn
from psycopg import pq

from chimeway import Chimeway, RetryPolicy
from chimeway.testing import RecordingAdapter

# The adapter tests' real SMTP server, for engine tests that send through SmtpAdapter.
from tests.adapters.conftest import free_port, smtp_server, start_smtp  # noqa: F401

IMMEDIATE = RetryPolicy(base_delay=dt.timedelta(0), jitter=0)


class Recorders(dict[str, RecordingAdapter]):
    def __missing__(self, channel: str) -> RecordingAdapter:
        self[channel] = adapter = RecordingAdapter()
        return adapter


@pytest.fixture
def adapters() -> Recorders:
    """One RecordingAdapter per channel, created on first use."""
    return Recorders()


@pytest.fixture
def make_cw(committed_db: str, adapters: Recorders) -> Iterator[Callable[..., Chimeway]]:
    made: list[Chimeway] = []

    def make(**options: Any) -> Chimeway:
        options.setdefault("default_retry", IMMEDIATE)
        options.setdefault(
            "adapters", {c: adapters[c] for c in ("in_app", "email", "sms", "push", "chat")}
        )
        cw = Chimeway(committed_db, **options)
        made.append(cw)
        return cw

    yield make
    for cw in made:
        cw.close()


@pytest.fixture
def cw(make_cw: Callable[..., Chimeway]) -> Chimeway:
    return make_cw()


def count(where: str | psycopg.Connection[Any], sql: str, *params: Any) -> int:
    """The first column of ``sql``'s first row, read through a connection (inside its
    transaction) or on a database URL."""
    if isinstance(where, psycopg.Connection):
        row = where.execute(sql.encode(), params or None).fetchone()
    else:
        with psycopg.connect(where) as conn:
            row = conn.execute(sql.encode(), params or None).fetchone()
    assert row is not None
    return int(row[0])


def counts(url: str | psycopg.Connection[Any]) -> dict[str, int]:
    tables = [
        "chimeway_events",
        "chimeway_notifications",
        "chimeway_deliveries",
        "chimeway_delivery_attempts",
        "chimeway_workflow_runs",
        "chimeway_workflow_transitions",
        "chimeway_workflow_definitions",
        "procrastinate_jobs",
    ]
    return {t: count(url, f"SELECT count(*) FROM {t}") for t in tables}


def waited_round_trips(conn: psycopg.Connection[Any], work: Callable[[], object]) -> int:
    """The messages ``work`` sends on ``conn`` that wait for the server (a simple Query, an
    extended-protocol Sync), from libpq's trace."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            work()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return sum(
            1
            for line in trace
            if (parts := line.split("\t"))[0] == "F"
            and len(parts) > 2
            and parts[2].strip() in ("Query", "Sync")
        )


def concurrently(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Run ``fn`` in ``n`` threads released together; their results, in completion order."""
    barrier = threading.Barrier(n)
    results: list[Any] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        value = fn()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == n, "a thread failed or hung"
    return results


@pytest.fixture
def make_tx_cw(shared_db: str, adapters: Recorders) -> Iterator[Callable[..., Chimeway]]:
    """Chimeways on the shared database for tests in a rolled-back transaction (``db``):
    pass ``conn=db`` to their calls; they never open their pool."""
    made: list[Chimeway] = []

    def make(**options: Any) -> Chimeway:
        options.setdefault("default_retry", IMMEDIATE)
        options.setdefault(
            "adapters", {c: adapters[c] for c in ("in_app", "email", "sms", "push", "chat")}
        )
        cw = Chimeway(shared_db, **options)
        made.append(cw)
        return cw

    yield make
    for cw in made:
        cw.close()


@pytest.fixture
def tx_cw(make_tx_cw: Callable[..., Chimeway]) -> Chimeway:
    return make_tx_cw()


@pytest.fixture(scope="session")
def shared_cw(shared_db: str) -> Iterator[Chimeway]:
    """A Chimeway on the session's shared database, for tests that run the engine inside a
    rolled-back transaction (the ``db`` fixture's connection): it never opens its pool."""
    with Chimeway(
        shared_db,
        default_retry=IMMEDIATE,
        adapters={c: RecordingAdapter() for c in ("in_app", "email", "sms", "push", "chat")},
    ) as cw:
        yield cw


class Uvicorns:
    """uvicorn servers on threads of this process (:func:`uvicorns`), all stopped at the end
    of the test."""

    def __init__(self) -> None:
        self.servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, app: Any, port: int | None = None, **options: Any) -> str:
        """Serve ``app`` on 127.0.0.1 (a free port unless given); its base URL once up."""
        port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **options)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        self.servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for server, thread in self.servers:
            server.should_exit = True
            thread.join(10)


@pytest.fixture
def uvicorns() -> Iterator[Uvicorns]:
    servers = Uvicorns()
    yield servers
    servers.stop()
