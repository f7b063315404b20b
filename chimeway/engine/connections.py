"""How the engine's pools treat their connections: the check on checkout, the settings of
the delivery path's connections, generic plans for a few rows' work on the app's
(:func:`few_rows`), and a few statements sent on the caller's connection in one round trip
(:func:`together`).

The delivery path (a claim; a record with the progression it carries) runs the same few
statements over and over. Planned afresh on each call, each of them cost 0.4-0.6 ms of
planning (``pg_stat_statements``, a two-step workflow on two workers) beside 0.4-0.5 ms of
execution: PostgreSQL keeps choosing custom plans for them because a generic plan of
``id = ANY($1)`` looks ten rows dear. Their connections therefore keep one generic plan per
statement; and as a generic plan made while a table was tiny would read it whole for as
long as the connection lives, they also never plan a sequential scan (every statement of
the path has its index: ``tests/integration/test_delivery_plans.py`` holds it to that on
tables analysed while empty).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from chimeway.db import Conn, check_sync
from chimeway.errors import translated
from chimeway.store import sessions

Sent = TypeVar("Sent")

#: Up to this many rows, the work of a trigger or a signal on the app's connections runs on
#: generic plans (:func:`few_rows`): planning its statements anew on every call (the policy
#: read 1.8 ms, the delivery insert 0.5 ms, the lock of a signal's waiting runs 0.3 ms) costs
#: more than the work. For thousands of rows a plan made for their number is the better one
#: (a 5,000-recipient trigger: 1.35-1.59 s on custom plans, 1.74 s on generic ones).
GENERIC_PLANS_UP_TO = 10


@contextmanager
def few_rows(conn: Conn, rows: int, *, callers: bool) -> Iterator[None]:
    """Generic plans for the block's statements when it works on at most
    ``GENERIC_PLANS_UP_TO`` rows, for ``conn``'s transaction only; on the caller's
    connection (``callers``) the mode is set back after the block
    (:func:`chimeway.store.sessions.generic_plans`)."""
    if rows > GENERIC_PLANS_UP_TO:
        yield
        return
    with sessions.generic_plans(conn, restore=callers):
        yield


def can_send_together(conn: Conn) -> bool:
    """Whether :func:`together` can take the caller's ``conn``: its transaction open (not
    failed), not in pipeline mode already, over a libpq that pipelines. (On an idle
    connection psycopg waits for the ``BEGIN`` it sends first, even in pipeline mode: no
    round trip to save there.)"""
    return (
        not conn.autocommit
        and conn._pipeline is None
        and conn.info.transaction_status == TransactionStatus.INTRANS
        and psycopg.Pipeline.is_supported()
    )


@contextmanager
def together(conn: Conn) -> Iterator[None]:
    """The statements the block sends on the caller's ``conn`` (one that
    :func:`can_send_together`) reach PostgreSQL in one round trip (psycopg's pipeline mode),
    inside a savepoint as :meth:`~chimeway.engine.context.Engine.transaction` would run
    them: if they fail, their work is rolled back to it and the caller's transaction stays
    usable. Their rows are read after the block; an error of theirs is raised as it ends.

    A savepoint around a statement otherwise takes two more round trips (``SAVEPOINT`` and
    ``RELEASE``), each waited for: three for a trigger in the app's transaction where the
    statement alone takes one."""
    try:
        with conn.pipeline():
            sessions.savepoint(conn)
            yield
            sessions.release_savepoint(conn)
    except BaseException:
        # The pipeline's end sent the savepoint before the failed work (or the work never
        # reached the server): undo what followed it. A connection too broken for that has
        # lost the caller's transaction anyway; the work's own error is the one to raise.
        with suppress(psycopg.Error):
            sessions.back_to_savepoint(conn)
            sessions.release_savepoint(conn)
        raise


def sent_together(conn: Conn, send: Callable[[Conn], Sent]) -> Sent | None:
    """What ``send`` returns (the cursor of the statement it sends on the caller's
    ``conn``) once the statement has run :func:`together` with its savepoint, in one round
    trip; ``None``, having sent nothing, when ``conn`` cannot
    (:func:`can_send_together`): the caller takes its usual path. The statement's errors
    come out as :func:`~chimeway.errors.translated` makes them."""
    check_sync(conn)
    if not can_send_together(conn):
        return None
    with translated(), together(conn):
        return send(conn)


def tune_for_delivery(conn: Conn) -> None:
    """The pool's ``configure`` for the delivery path's connections (once per connection)."""
    replanning(conn)
    sessions.tune_for_delivery(conn)
    conn.commit()


def replanning(conn: Conn) -> None:
    """The engine's pools' ``configure``: ``conn``'s cursors prepare again a statement a
    migration made stale (:class:`chimeway.store.sessions.Replanning`)."""
    conn.cursor_factory = sessions.Replanning


async def autocommit(conn: Any) -> None:
    """The ``configure`` of the pool Procrastinate's worker uses: its connections in
    autocommit (each of its statements there is one call of one of its functions)."""
    await conn.set_autocommit(True)


class _Idle:
    """When each connection was last checked or handed out."""

    def __init__(self, after: float) -> None:
        self.after = after
        self._lock = threading.Lock()
        self._checked: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def due(self, conn: Any) -> bool:
        """Whether ``conn`` may have sat idle long enough for a server restart or a dropped
        network to go unnoticed (and notes that it is being handed out now)."""
        now = time.monotonic()
        with self._lock:
            last = self._checked.get(conn)
            self._checked[conn] = now
        return last is None or now - last > self.after  # idle for at most now - last


class IdleCheck(_Idle):
    """The pool's check on checkout: ping a connection only if it may have sat idle long
    enough for a server restart or a dropped network to go unnoticed. A busy worker's
    connections come back within milliseconds and skip the round trip (a few percent of a
    step); an error on one of those is retried where it matters (a send's record)."""

    def __init__(self, after: float = 2.0) -> None:
        super().__init__(after)

    def __call__(self, conn: Conn) -> None:
        if self.due(conn):
            ConnectionPool.check_connection(conn)


class AsyncIdleCheck(_Idle):
    """:class:`IdleCheck` for the pool Procrastinate's worker uses (its job fetches and
    finishes). A fetch that fails on a connection broken since stops the worker, which
    starts again (``chimeway.worker``); a finish that fails leaves the job to stalled-job
    recovery, and Chimeway's jobs are safe to run twice."""

    def __init__(self, after: float = 2.0) -> None:
        super().__init__(after)

    async def __call__(self, conn: Any) -> None:
        if self.due(conn):
            await AsyncConnectionPool.check_connection(conn)
