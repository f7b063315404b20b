"""Log lines of state changes, written once the transaction that made the change commits.

Engine code logs what it changed through :func:`info`. Inside :func:`held` (which wraps a
transaction) the lines are kept, and written when the block ends without an error: after the
transaction commits, so a transaction that rolls back (a savepoint retried one by one, a
record retried after a lost connection) leaves no line behind and no line is written twice.
Blocks nest like savepoints: an inner block that fails drops its lines; one that succeeds
hands them to the outer block. Outside any block a line is written at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Line:
    logger: logging.Logger
    level: int
    message: str
    extra: dict[str, Any]


_pending: ContextVar[list[_Line] | None] = ContextVar("chimeway_pending_log_lines", default=None)


def info(logger: logging.Logger, message: str, **extra: Any) -> None:
    """Log ``message`` at INFO with ``extra``, once the enclosing transaction commits."""
    line = _Line(logger, logging.INFO, message, extra)
    pending = _pending.get()
    if pending is None:
        _write(line)
    else:
        pending.append(line)


@contextmanager
def held() -> Iterator[None]:
    """Keep the lines logged inside; write them if the block succeeds, drop them if not."""
    outer = _pending.get()
    mine: list[_Line] = []
    token = _pending.set(mine)
    try:
        yield
    finally:
        _pending.reset(token)
    # Reached only when the block succeeded (an exception skips this).
    if outer is not None:
        outer.extend(mine)
    else:
        for line in mine:
            _write(line)


def _write(line: _Line) -> None:
    if line.logger.isEnabledFor(line.level):
        line.logger.log(line.level, line.message, extra=line.extra)
