"""Helpers for testing code that uses Chimeway (public, documented).

* :func:`drain` runs every due Chimeway job in this process, through Procrastinate's own
  worker, until none is left; so a test can trigger, drain, and assert on the results.
* :class:`RecordingAdapter` records what would have been sent and can be scripted to fail.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from chimeway.adapters import DeliveryFailure, DeliveryRequest, Sent
from chimeway.app import Chimeway
from chimeway.store import jobs
from chimeway.store.jobs import QUEUES

Scripted = Sent | DeliveryFailure | Exception


class RecordingAdapter:
    """An adapter that sends nothing and remembers every request.

    ``script`` (or :meth:`then`) lists what the next calls return or raise, in order; once it
    runs out, calls succeed. The sends of a fan-out's chunk run side by side, so which of
    them takes which answer is arbitrary: script a fan-out with ``send_concurrency=1`` on the
    ``Chimeway`` under test, or key the answers by recipient in an adapter of your own.
    ``sent`` holds the requests that succeeded, ``requests`` all.
    """

    def __init__(self, script: Iterable[Scripted] = ()) -> None:
        self._script: deque[Scripted] = deque(script)
        self._lock = threading.Lock()
        self.requests: list[DeliveryRequest] = []
        self.sent: list[DeliveryRequest] = []

    def then(self, *results: Scripted) -> RecordingAdapter:
        with self._lock:
            self._script.extend(results)
        return self

    def deliver(self, request: DeliveryRequest) -> Sent:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.popleft() if self._script else None
            if scripted is None or isinstance(scripted, Sent):
                self.sent.append(request)
        if isinstance(scripted, Exception):
            raise scripted
        return scripted or Sent(provider_message_id=f"recorded-{request.delivery_id}")

    def sent_to(self, recipient_id: str) -> list[DeliveryRequest]:
        return [r for r in self.sent if r.recipient_id == recipient_id]


def due_jobs(cw: Chimeway, queues: Iterable[str] | None = None) -> int:
    """How many jobs in ``queues`` (default: Chimeway's) are due now."""
    with cw.pool.connection() as conn:
        return jobs.due_count(conn, list(queues or set(QUEUES.values())))


def drain(cw: Chimeway, queues: Iterable[str] | None = None, max_rounds: int = 50) -> None:
    """Run every due job in ``queues`` (default: Chimeway's), including the jobs those jobs
    defer, until none is due. Jobs scheduled in the future are left alone."""
    names = sorted(set(queues or QUEUES.values()))
    for _ in range(max_rounds):
        if due_jobs(cw, names) == 0:
            _raise_failures(cw, names)
            return
        cw.procrastinate.run_worker(
            queues=names,
            wait=False,
            install_signal_handlers=False,
            listen_notify=False,
            concurrency=1,
        )
    raise RuntimeError(f"jobs were still due after {max_rounds} rounds of draining")


def _raise_failures(cw: Chimeway, queues: list[str]) -> None:
    """A task that raised is either failed or waiting for its retry: a test must hear of it."""
    with cw.pool.connection() as conn:
        failing = jobs.failing(conn, queues)
    if failing:
        listed = ", ".join(f"{job.task_name}[{job.id}] ({job.status})" for job in failing)
        raise AssertionError(f"jobs failed while draining: {listed}")
