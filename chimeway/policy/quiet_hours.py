"""Quiet hours and daily local times in a recipient's time zone (design §13), pure.

A window is given by local wall times ``start`` and ``end`` and wraps midnight when
``start > end`` (22:00 to 07:00). Each local day ``d`` has one occurrence: from ``start`` on
``d`` to ``end`` on ``d`` (or on ``d + 1`` when the window wraps), both turned into instants:

- ``start`` is inclusive, ``end`` exclusive: at exactly ``end`` the window is over.
- A local time that occurs twice (clocks go back) is taken at its EARLIER occurrence for
  ``start`` and its LATER occurrence for ``end``, so the window covers the repeated hour.
- A local time that does not exist (clocks go forward) becomes the first valid instant after
  the gap, for ``start`` and ``end`` alike.

An instant is quiet when it lies in one of these occurrences. Membership is decided on
instants, not on the wall-clock reading alone, so 23- and 25-hour days and 30-minute shifts
need no special case. :func:`next_local_time` uses the ``end`` rule for daily times.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chimeway.errors import InvalidArgument

_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local wall times, ``[start, end)``, in an IANA time zone."""

    start: time
    end: time
    timezone: str

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, time):
                raise InvalidArgument(f"QuietHours.{name}: expected a datetime.time, got {value!r}")
            if value.tzinfo is not None:
                raise InvalidArgument(
                    f"QuietHours.{name}: must be a local wall time without tzinfo "
                    "(the zone is QuietHours.timezone)"
                )
        if self.start == self.end:
            raise InvalidArgument(
                f"QuietHours: start and end are both {self.start.isoformat()}; "
                "a window needs two different times"
            )
        zone_for(self.timezone, field="QuietHours.timezone")

    @property
    def wraps_midnight(self) -> bool:
        return self.start > self.end


def zone_for(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The IANA zone ``name``; :class:`InvalidArgument` naming ``field`` when there is none."""
    if not isinstance(name, str):
        raise InvalidArgument(f"{field}: expected an IANA time zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(f"{field}: {name!r} is not a known IANA time zone") from None


def is_quiet(instant: datetime, quiet: QuietHours) -> bool:
    """Whether the aware ``instant`` falls inside the quiet-hours window."""
    return _end_of_occurrence_containing(_aware(instant, "instant"), quiet) is not None


def held_until(instant: datetime, quiet: QuietHours) -> datetime | None:
    """The first instant (UTC) at or after ``instant`` that is outside the window.

    ``None`` when ``instant`` is outside already. When one occurrence ends where the next has
    begun (around a DST transition a wrapping window's occurrences can touch or overlap), the
    hold runs to the end of the last.
    """
    current = _aware(instant, "instant")
    end = _end_of_occurrence_containing(current, quiet)
    if end is None:
        return None
    # Each step ends strictly later, and no window covers every instant of a day: it stops.
    while (following := _end_of_occurrence_containing(end, quiet)) is not None:
        end = following
    return end


def next_local_time(after: datetime, at: time, timezone: str) -> datetime:
    """The first instant (UTC) strictly after ``after`` whose local time in ``timezone`` is ``at``.

    For daily schedules ("every day at 09:00 in the recipient's zone"): there is exactly one
    such instant per local day. A time that occurs twice that day is taken at its later
    occurrence; a time that does not exist is the first valid instant after the gap.
    """
    moment = _aware(after, "after")
    if not isinstance(at, time) or at.tzinfo is not None:
        raise InvalidArgument(f"at: expected a datetime.time without tzinfo, got {at!r}")
    zone = zone_for(timezone)
    today = moment.astimezone(zone).date()
    days = (today + offset * _DAY for offset in range(-1, 3))
    return min(c for c in (_resolve(d, at, zone, later=True) for d in days) if c > moment)


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{name}: expected a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{name}: must be timezone-aware")
    return value


def _end_of_occurrence_containing(instant: datetime, quiet: QuietHours) -> datetime | None:
    zone = zone_for(quiet.timezone, field="QuietHours.timezone")
    today = instant.astimezone(zone).date()
    # An occurrence lasts under a day of wall time; DST moves it by at most a few hours.
    for offset in (-2, -1, 0, 1):
        start, end = _occurrence(today + offset * _DAY, quiet, zone)
        if start <= instant < end:
            return end
    return None


def _occurrence(day: date, quiet: QuietHours, zone: ZoneInfo) -> tuple[datetime, datetime]:
    end_day = day + _DAY if quiet.wraps_midnight else day
    return (
        _resolve(day, quiet.start, zone, later=False),
        _resolve(end_day, quiet.end, zone, later=True),
    )


@functools.lru_cache(maxsize=4096)
def _resolve(day: date, at: time, zone: ZoneInfo, *, later: bool) -> datetime:
    """The UTC instant of local ``day`` at ``at``: a repeated time at its earlier or ``later``
    occurrence, a skipped time at the first valid instant after the gap. Cached: planning
    asks for the same few days and windows for every delivery of a batch."""
    wall = datetime.combine(day, at.replace(fold=0), tzinfo=zone)
    first = wall.astimezone(UTC)  # fold=0: the offset before a transition
    second = wall.replace(fold=1).astimezone(UTC)  # fold=1: the offset after it
    if first == second:
        return first
    if first < second:  # the time occurs twice (PEP 495: fold=0 is the earlier moment)
        return second if later else first
    return _transition_between(second, first, zone)


def _transition_between(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The instant in ``(low, high]`` where the zone's offset changes (a gap's end)."""
    before = low.astimezone(zone).utcoffset()
    lo, hi = math.floor(low.timestamp()), math.ceil(high.timestamp())
    # tzdb transitions fall on whole seconds; bisect on them.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)
