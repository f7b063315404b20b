"""Throttles: at most ``limit`` sends per ``per`` under one key (a channel, or a provider
account that several channels share), whatever the number of workers (design §13), pure.

The grants live in PostgreSQL: a claimer of a key takes the key's lock, counts the sends
granted after ``now - per`` (later ones too: another claimer's clock may have run ahead) and
grants ``min(wanted, limit - counted)`` sends at ``now``, the instant of its claim, which is
also its attempts' start. Then no window of length ``per`` ever holds more than ``limit``
sends: when a send is granted, every send of any window that also holds it was counted.

A delivery that gets no grant is not dropped: it is deferred to the first instant at which
one more send fits, :func:`free_instants`, and tries again then.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime, timedelta

from chimeway.errors import InvalidArgument


def free_instants(
    recent: Sequence[tuple[datetime, int]],
    *,
    now: datetime,
    limit: int,
    per: timedelta,
    count: int,
) -> list[datetime]:
    """The first ``count`` instants, from ``now`` on, at which one more send each fits under
    ``limit`` per ``per``, given the ``recent`` grants (instant, sends) of the window: each
    instant assumes the sends before it took theirs. In order; repeated when several fit at
    once."""
    if now.utcoffset() is None:
        raise InvalidArgument("now: must be a timezone-aware datetime")
    if limit < 1 or per <= timedelta(0) or count < 0:
        raise InvalidArgument("limit and per must be positive and count at least 0")
    times = sorted(at for at, sends in recent if at > now - per for _ in range(sends))
    found: list[datetime] = []
    for _ in range(count):
        # Drop the oldest sends until one more fits; it fits once the last dropped is `per` old.
        drop = len(times) - (limit - 1)
        at = now if drop <= 0 else max(now, times[drop - 1] + per)
        bisect.insort(times, at)
        found.append(at)
    return found
