"""Group commit: writes submitted by many threads at once share one transaction.

A thread that submits while no write is running flushes at once, alone: no wait is added
at low load. Threads that submit while one runs queue up, and the first of them to find
the way clear flushes all the queued items (up to ``max_batch``) in one transaction when it
ends: at high load a commit, its round trips and its WAL flush are paid once per batch
instead of once per item. Each thread returns once its own item is written (or raises what
the write raised), so nobody flushes for others indefinitely.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T]):
    item: T
    done: bool = False
    result: Any = None
    error: BaseException | None = field(default=None)


class GroupCommit(Generic[T, R]):
    """Batches the items of concurrent :meth:`submit` calls into shared ``flush`` calls."""

    def __init__(self, max_batch: int = 500) -> None:
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Slot[T]] = []
        self._flushing = False

    def submit(self, item: T, flush: Callable[[Sequence[T]], Sequence[R]]) -> R:
        """Write ``item`` with ``flush`` (which writes a batch in one transaction and returns
        one result per item, in order), possibly together with others; its result."""
        slot: _Slot[T] = _Slot(item)
        with self._cond:
            self._pending.append(slot)
            while not slot.done:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self._cond.release()
                try:
                    self._write(batch, flush)
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise _own(slot.error) from slot.error
        result: R = slot.result
        return result

    @staticmethod
    def _write(batch: list[_Slot[T]], flush: Callable[[Sequence[T]], Sequence[R]]) -> None:
        try:
            results = list(flush([slot.item for slot in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)}")
        except BaseException as exc:
            for slot in batch:
                slot.error, slot.done = exc, True
            return
        for slot, result in zip(batch, results, strict=True):
            slot.result, slot.done = result, True


def _own(error: BaseException) -> BaseException:
    """A new exception like ``error`` for one thread of a failed batch: one instance raised
    in several threads would share (and overwrite) one traceback."""
    try:
        return type(error)(*error.args)
    except Exception:
        return RuntimeError(f"the shared write failed: {error!r}")
