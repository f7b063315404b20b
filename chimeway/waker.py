"""The due-time waker: scheduled jobs (timers, deferred deliveries, retries) start at their
due time, not at the workers' next poll (design §8; research: timer-precision.md).

Procrastinate's workers wake on a NOTIFY when a job is inserted and otherwise poll; nothing
wakes them when a job scheduled for later comes due. One worker process per queue set
leads (a session advisory lock; the others wait on it without a query, and one takes over
the moment the leader's session ends). The leader sleeps until the next due job of its
queues, on the database's clock, and then sends the notification Procrastinate's insert
trigger sends, so the workers fetch it. It re-plans when Chimeway's triggers report a new
future due time (``chimeway_waker``: an insert for later, a retry, a job pulled earlier),
announces at most every ``min_gap`` (a burst of due jobs costs a few notifications, not one
each), and announces again a job still waiting ``stale_after`` after its due time (a
worker may have cleared a wake-up while a fetch was in flight). Each NOTIFY wakes every
listening worker once, as an insert does; there is one leader, so there is no stampede.

The workers keep polling: the waker makes jobs start on time, never makes them start at all.

A leader given ``on_due`` calls it first with the queues that came due, and announces only
what is still due after it, except in the queues the hook says it covers: the worker fires
the due timers of runs itself this way (:class:`chimeway.worker._Firing`), at their due time
and without a job's hop through the queue. The hook may return once its firing has claimed
the due runs (their timer jobs locked, deleted at its commit): those jobs, still due to
the next plan, are then not announced, so the leader can go on and start another firing
for the waits that come due while that one commits. A hook that fails is logged; the
announcement then covers everything (and the stale repeat covers a covered queue's jobs
the hook could not take).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import psycopg

from chimeway import logs
from chimeway.store import waker as store

logger = logging.getLogger(__name__)


class Waker:
    """Wakes the workers of ``queues`` (``None``: every queue) when their scheduled jobs come
    due. :meth:`run` until cancelled; it reconnects and re-elects by itself."""

    def __init__(
        self,
        database_url: str,
        queues: Sequence[str] | None = None,
        *,
        on_due: Callable[[list[str]], Awaitable[Collection[str] | None]] | None = None,
        min_gap: float = 0.005,
        stale_after: float = 0.02,
        lookback: float = 2.0,
        max_sleep: float = 30.0,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.database_url = database_url
        self.queues = sorted(queues) if queues else None
        self.key = "chimeway.waker:" + (",".join(self.queues) if self.queues else "*")
        self.on_due = on_due
        self.min_gap = min_gap
        self.stale_after = dt.timedelta(seconds=stale_after)
        self.lookback = dt.timedelta(seconds=lookback)
        self.max_sleep = max_sleep
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: Set while this waker leads its queue set (tests and logs).
        self.leading = asyncio.Event()
        #: Announcements sent since it started (due jobs, and repeats of waiting ones).
        self.announced = 0

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A leader that lost its connection starts again at the shortest delay.
                failures = 1 if self.leading.is_set() else failures + 1
                self.leading.clear()
                delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
                lost = isinstance(exc, psycopg.OperationalError)  # no traceback: expected
                logger.warning(
                    f"waker stopped; reconnecting in {delay:.1f}s",
                    extra={"action": "waker.failed", **logs.error_fields(exc)},
                    exc_info=None if lost else logs.withheld(exc),
                )
                await asyncio.sleep(delay)

    async def _lead(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=10,
            application_name=f"chimeway-waker:{os.getpid()}",
        )
        try:
            await store.prepare(conn)
            await store.lock(conn, self.key)
            await store.listen(conn)
            self.leading.set()
            logger.info(
                "leading the due-time wake-ups",
                extra={"action": "waker.leading", "queues": self.queues or "all"},
            )
            await self._loop(conn)
        finally:
            self.leading.clear()
            # Closing ends the session, which releases the lock for a standby.
            await conn.close()

    async def _loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        plan = await self._plan(conn, mark=None)
        # After an election, announce what came due while nobody led (the polls covered it).
        mark = plan.db_now - self.lookback
        repeated_at = 0.0
        while True:
            plan = await self._plan(conn, mark)
            covered: Collection[str] = ()
            if plan.due_queues and self.on_due is not None:
                covered = await self._call_on_due(plan.due_queues)
                seen = plan.db_now
                plan = await self._plan(conn, mark)  # what the hook left
                if covered:
                    # The hook's claim took what was due by `seen`; what came due in its
                    # queues since is not announced, but calls the hook again.
                    plan = dataclasses.replace(plan, db_now=seen)
            if plan.due_queues:
                left = [
                    (queue, job)
                    for queue, job in zip(plan.due_queues, plan.due_jobs, strict=True)
                    if queue not in covered
                ]
                if left:
                    await store.announce(conn, left)
                    self.announced += 1
                mark = plan.db_now
                await asyncio.sleep(self.min_gap)
                continue
            now = time.monotonic()
            repeat_in = repeated_at + self.stale_after.total_seconds() - now
            if plan.stale_queues and repeat_in <= 0:
                await store.announce(conn, [(queue, 0) for queue in plan.stale_queues])
                self.announced += 1
                repeated_at = now
                await asyncio.sleep(self.min_gap)
                continue
            timeout = self.max_sleep
            if plan.next_in is not None:
                # Just after the due time: a fetch that starts then sees the job due.
                timeout = min(timeout, plan.next_in + 0.001)
            if plan.stale_queues:
                timeout = min(timeout, repeat_in)
            await self._sleep(conn, timeout)

    async def _call_on_due(self, queues: list[str]) -> Collection[str]:
        """The queues the hook covers (their due jobs are not announced)."""
        assert self.on_due is not None
        try:
            return await self.on_due(queues) or ()
        except Exception as exc:  # the announcement that follows covers what it did not do
            logger.warning(
                "the due-time hook failed; announcing the due jobs instead",
                exc_info=logs.withheld(exc),
                extra={"action": "waker.hook_failed"},
            )
            return ()

    async def _plan(
        self, conn: psycopg.AsyncConnection[Any], mark: dt.datetime | None
    ) -> store.Plan:
        return await store.plan(
            conn,
            mark=mark or dt.datetime.max.replace(tzinfo=dt.UTC),
            queues=self.queues,
            stale_after=self.stale_after,
            lookback=self.lookback,
        )

    async def _sleep(self, conn: psycopg.AsyncConnection[Any], timeout: float) -> None:
        """Until ``timeout`` or a new due time for one of our queues; the notifications that
        came with it are taken too, so a burst of inserts costs one re-plan."""
        async for notify in conn.notifies(timeout=max(timeout, 0.0)):
            if self.queues is None or notify.payload in self.queues:
                break
        else:
            return
        await asyncio.sleep(self.min_gap)
        async for _ in conn.notifies(timeout=0):
            pass


@contextlib.asynccontextmanager
async def running(waker: Waker | None) -> Any:
    """Run ``waker`` (if any) for the duration of the block, then cancel it."""
    if waker is None:
        yield None
        return
    task = asyncio.create_task(waker.run(), name="chimeway-waker")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
