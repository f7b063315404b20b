"""The threads a process calls adapters on, one lane (bulkhead) per adapter.

Each adapter gets its own pool of ``capacity`` threads and a deadline per call, so a provider
that hangs holds only its own lane: other channels' sends go on, and the caller stops waiting
for the hung call at its deadline (the call itself cannot be killed; its late answer is
logged). A chunk's sends run side by side, and their answers come back in small groups as
they finish, so each is recorded soon after it happened.

A send waiting for a thread of its lane waits for as long as the lane makes progress: a busy,
healthy provider only makes it later. It is given up unsent only when it has waited a
deadline and every thread of the lane is held by a call past its deadline (the lane is
jammed: no thread may ever come free).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Sends that finish within this many seconds of each other come out in one group.
GATHER = 0.02


@dataclass(frozen=True)
class Lane:
    """Where a send runs: ``key`` names the lane (one per adapter), ``capacity`` how many
    of its calls may run at once, ``timeout`` how long the caller waits for one."""

    key: Hashable
    name: str
    capacity: int
    timeout: float


@dataclass
class _Running(Generic[T]):
    item: T
    lane: Lane
    queued: float  # monotonic
    started: float | None = None  # monotonic, once a lane thread picked it up


class Senders:
    """The process's send lanes, created on first use and shared by every job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[Hashable, ThreadPoolExecutor] = {}
        #: Per lane, its calls still running past their deadline.
        self._overdue: dict[Hashable, int] = {}

    def run(
        self,
        items: Sequence[T],
        send: Callable[[T], R],
        lane: Callable[[T], Lane],
        timed_out: Callable[[T, Lane], R],
        never_started: Callable[[T, Lane], R],
        *,
        every: float,
    ) -> Iterator[list[tuple[T, R]]]:
        """``send`` applied to every item on its lane's threads. The ``(item, result)``
        pairs come out in groups of what finished at about the same time (each group as soon
        as it did); ``every`` seconds at the most pass between two looks at the deadlines. An
        item still running past its lane's timeout yields ``timed_out(item, lane)`` (its
        call goes on in its thread: its late answer is only logged); one that waited that
        long for a thread of its lane while every thread of it is held by such an overdue
        call (the lane is jammed, e.g. the provider hangs) is not sent at all and yields
        ``never_started(item, lane)``; one that waits behind calls still within their
        deadline waits on."""
        running: dict[Future[R], _Running[T]] = {}
        for item in items:
            where = lane(item)
            entry = _Running(item, where, time.monotonic())
            future = self._executor(where).submit(self._started, entry, send)
            running[future] = entry
        pending = set(running)
        while pending:
            done, pending = wait(pending, timeout=every, return_when=FIRST_COMPLETED)
            if done and pending:  # let the others that finish about now join this group
                more, pending = wait(pending, timeout=min(every, GATHER))
                done |= more
            group = [(running[f].item, f.result()) for f in done]
            now = time.monotonic()
            for future in list(pending):
                entry = running[future]
                if entry.started is not None:
                    if now - entry.started > entry.lane.timeout:
                        pending.discard(future)
                        self._overdue_call(entry.lane, future)
                        group.append((entry.item, timed_out(entry.item, entry.lane)))
                elif (
                    now - entry.queued > entry.lane.timeout
                    and self._jammed(entry.lane)
                    and future.cancel()
                ):
                    pending.discard(future)
                    group.append((entry.item, never_started(entry.item, entry.lane)))
            if group:
                yield group

    def _overdue_call(self, lane: Lane, future: Future[Any]) -> None:
        """Count the call as holding a thread of its lane past its deadline until it ends
        (its late answer is logged then)."""
        with self._lock:
            self._overdue[lane.key] = self._overdue.get(lane.key, 0) + 1

        def ended(_: Future[Any]) -> None:
            with self._lock:
                self._overdue[lane.key] -= 1
            _late(lane)(future)

        future.add_done_callback(ended)

    def _jammed(self, lane: Lane) -> bool:
        with self._lock:
            return self._overdue.get(lane.key, 0) >= lane.capacity

    @staticmethod
    def _started(entry: _Running[T], send: Callable[[T], R]) -> R:
        entry.started = time.monotonic()
        return send(entry.item)

    def _executor(self, lane: Lane) -> ThreadPoolExecutor:
        executor = self._lanes.get(lane.key)
        if executor is None:
            with self._lock:
                executor = self._lanes.get(lane.key)
                if executor is None:
                    executor = ThreadPoolExecutor(
                        lane.capacity, thread_name_prefix=f"chimeway-send-{lane.name}"
                    )
                    self._lanes[lane.key] = executor
        return executor

    def close(self) -> None:
        with self._lock:
            lanes, self._lanes = self._lanes, {}
        for executor in lanes.values():
            executor.shutdown(wait=False, cancel_futures=True)


def _late(lane: Lane) -> Callable[[Future[Any]], None]:
    def report(_: Future[Any]) -> None:
        logger.warning(
            "a send answered after its deadline; its outcome was already recorded as unknown",
            extra={"action": "delivery.late_answer", "lane": lane.name},
        )

    return report
