"""This process's beat: how other processes know it still holds the deliveries it claimed.

A process that claims deliveries registers in ``chimeway_processes`` and beats every
``interval`` from a daemon thread, on its own pool connection. Another process may take a
dispatched delivery over only once its claimant has not beaten for ``stuck_after``, counted
from the start of the taker's own unbroken run of beats (see the ``delivery_claim`` query):
so a claimant that is alive, and retrying to record an outcome while the database was away,
is never presumed dead because of the outage. A beat that fails (the database is away) is
retried at the next interval; the thread never stops the process.

It also knows which deliveries this process's calls hold (:meth:`Liveness.hold`): a claim
whose reply was lost (the connection broke after PostgreSQL committed it) leaves a delivery
dispatched by this process but held by no call. The next claim of it from this process takes
it again at once (``delivery_claim``'s ``orphaned``); and the beat releases such orphans, so
that another process may take them over after ``stuck_after`` while this one lives on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from chimeway import logs
from chimeway.db import Conn
from chimeway.store import deliveries, processes

logger = logging.getLogger(__name__)


class Liveness:
    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[Conn]],
        *,
        interval: dt.timedelta,
    ) -> None:
        self.id = uuid.uuid4()
        self.interval = interval
        self._connection = connection
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding = threading.Lock()
        self._held: set[uuid.UUID] = set()
        self._orphans: set[uuid.UUID] = set()

    def ensure(self) -> uuid.UUID:
        """Register (one synchronous beat) the first time; then beat in the background."""
        if not self._started:
            with self._lock:
                if not self._started:
                    self._beat()
                    self._thread = threading.Thread(
                        target=self._run, name="chimeway-liveness", daemon=True
                    )
                    self._thread.start()
                    self._started = True
        return self.id

    def _beat(self) -> None:
        with self._connection() as conn:
            processes.beat(
                conn,
                self.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                gap=self.interval * 3,
            )

    def hold(self, ids: Sequence[uuid.UUID]) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """Mark ``ids`` as held by the calling claim before it runs: the ids it now holds,
        and those another call of this process holds already (not to be claimed again)."""
        with self._holding:
            busy = [i for i in ids if i in self._held]
            mine = [i for i in ids if i not in self._held]
            self._held.update(mine)
            self._orphans.difference_update(mine)
        return mine, busy

    def let_go(self, ids: Sequence[uuid.UUID], *, orphaned: bool = False) -> None:
        """The call is done with ``ids`` (recorded, or never claimed). ``orphaned``: its
        claim failed, perhaps after committing; the beat releases any it left dispatched."""
        with self._holding:
            self._held.difference_update(ids)
            if orphaned:
                self._orphans.update(ids)

    def _release_orphans(self) -> None:
        # Under the lock: a call taking one of them meanwhile would lose its fresh claim.
        with self._holding:
            orphans = list(self._orphans - self._held)
            if not orphans:
                return
            with self._connection() as conn, conn.transaction():
                deliveries.release(conn, orphans, self.id)
            self._orphans.difference_update(orphans)

    def _run(self) -> None:
        while not self._stop.wait(self.interval.total_seconds()):
            try:
                self._beat()
                self._release_orphans()
            except Exception as exc:  # the database is away: beat again at the next interval
                logger.debug(
                    "beat failed",
                    exc_info=logs.withheld(exc),
                    extra={"action": "process.beat_failed"},
                )

    def close(self) -> None:
        """Stop beating and leave the registry (this process holds no delivery now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval.total_seconds() + 5)
        if self._started:
            try:
                with self._connection() as conn:
                    processes.forget(conn, self.id)
            except Exception as exc:
                logger.debug("could not leave the registry", exc_info=logs.withheld(exc))
