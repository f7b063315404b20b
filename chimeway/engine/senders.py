"""The threads a process calls adapters on: a chunk's sends run side by side."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Senders:
    """Up to ``concurrency`` adapter calls at once, shared by the whole process."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def in_groups(
        self, send: Callable[[T], R], items: Sequence[T], *, every: float
    ) -> Iterator[list[tuple[T, R]]]:
        """``send`` applied to every item (one item, or a concurrency of 1: in the calling
        thread). The finished ``(item, result)`` pairs come out in groups: all of them at
        once if they finish within ``every`` seconds, else what finished by then, and so on."""
        if len(items) <= 1 or self.concurrency == 1:
            group: list[tuple[T, R]] = []
            started = time.monotonic()
            for item in items:
                group.append((item, send(item)))
                if time.monotonic() - started >= every:
                    yield group
                    group, started = [], time.monotonic()
            if group:
                yield group
            return
        futures = {self._threads().submit(send, item): item for item in items}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=every)
            if done:
                yield [(futures[f], f.result()) for f in done]

    def _threads(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.concurrency, thread_name_prefix="chimeway-send"
                    )
                executor = self._executor
        return executor

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown()
