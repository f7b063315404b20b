"""Quiet hours across the real DST transitions of 2026 (design §13).

Expected instants were worked out by hand from the zones' rules, written in UTC with the local
reading beside them. 2026 transitions used:
- America/New_York: 03-08 02:00 EST -> 03:00 EDT (07:00Z); 11-01 02:00 EDT -> 01:00 EST (06:00Z)
- Europe/London: 03-29 01:00 GMT -> 02:00 BST (01:00Z); 10-25 02:00 BST -> 01:00 GMT (01:00Z)
- Australia/Lord_Howe (30-minute shift): 04-05 02:00 +11 -> 01:30 +10:30 (04-04 15:00Z);
  10-04 02:00 +10:30 -> 02:30 +11 (10-03 15:30Z)
- Asia/Kolkata: +05:30 all year
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimeway.errors import InvalidArgument
from chimeway.policy.quiet_hours import QuietHours, held_until, is_quiet, next_local_time

NY = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"
KOLKATA = "Asia/Kolkata"


def z(text: str) -> datetime:
    """A UTC instant from 'YYYY-MM-DDTHH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window(start: str, end: str, zone: str) -> QuietHours:
    return QuietHours(time.fromisoformat(start), time.fromisoformat(end), zone)


# (window, instant, held until or None)
HELD = {
    # --- America/New_York, spring forward (23-hour day) ---
    "ny-spring overnight, just before start (21:59:59 EST)": (
        window("22:00", "07:00", NY), z("2026-03-08T02:59:59"), None),
    "ny-spring overnight, exactly at start is inside (22:00 EST)": (
        window("22:00", "07:00", NY), z("2026-03-08T03:00"), z("2026-03-08T11:00")),
    "ny-spring overnight, 01:59 EST -> 07:00 EDT": (
        window("22:00", "07:00", NY), z("2026-03-08T06:59"), z("2026-03-08T11:00")),
    "ny-spring overnight, first instant after the gap (03:00 EDT)": (
        window("22:00", "07:00", NY), z("2026-03-08T07:00"), z("2026-03-08T11:00")),
    "ny-spring overnight, exactly at end is outside (07:00 EDT)": (
        window("22:00", "07:00", NY), z("2026-03-08T11:00"), None),
    "ny-spring overnight, 07:30 EDT is not held to 07:00 EST": (
        window("22:00", "07:00", NY), z("2026-03-08T11:30"), None),
    "ny-spring end exactly at the gap (02:00 -> 03:00 EDT)": (
        window("22:00", "02:00", NY), z("2026-03-08T06:59:59"), z("2026-03-08T07:00")),
    "ny-spring end at the gap, after it is outside": (
        window("22:00", "02:00", NY), z("2026-03-08T07:00"), None),
    "ny-spring end inside the gap (02:30 -> 03:00 EDT)": (
        window("22:00", "02:30", NY), z("2026-03-08T06:30"), z("2026-03-08T07:00")),
    "ny-spring start inside the gap begins after it (01:59 EST)": (
        window("02:30", "06:00", NY), z("2026-03-08T06:59"), None),
    "ny-spring start inside the gap begins at 03:00 EDT": (
        window("02:30", "06:00", NY), z("2026-03-08T07:00"), z("2026-03-08T10:00")),
    "ny-spring window entirely inside the gap is empty that day": (
        window("02:10", "02:50", NY), z("2026-03-08T07:00"), None),
    "ny-spring window inside the gap is back the next day": (
        window("02:10", "02:50", NY), z("2026-03-09T06:30"), z("2026-03-09T06:50")),
    # --- America/New_York, fall back (25-hour day) ---
    "ny-fall overnight, before start (21:59 EDT)": (
        window("22:00", "07:00", NY), z("2026-11-01T01:59"), None),
    "ny-fall overnight, at start (22:00 EDT)": (
        window("22:00", "07:00", NY), z("2026-11-01T02:00"), z("2026-11-01T12:00")),
    "ny-fall overnight, first 01:30 (EDT)": (
        window("22:00", "07:00", NY), z("2026-11-01T05:30"), z("2026-11-01T12:00")),
    "ny-fall overnight, second 01:30 (EST)": (
        window("22:00", "07:00", NY), z("2026-11-01T06:30"), z("2026-11-01T12:00")),
    "ny-fall overnight, 06:00 EST is not released at 07:00 EDT": (
        window("22:00", "07:00", NY), z("2026-11-01T11:00"), z("2026-11-01T12:00")),
    "ny-fall overnight, exactly at end (07:00 EST)": (
        window("22:00", "07:00", NY), z("2026-11-01T12:00"), None),
    "ny-fall end at an ambiguous time takes the later 01:30 (from the first)": (
        window("22:00", "01:30", NY), z("2026-11-01T05:30"), z("2026-11-01T06:30")),
    "ny-fall ambiguous end, 01:45 EDT reads past the end but is still held": (
        window("22:00", "01:30", NY), z("2026-11-01T05:45"), z("2026-11-01T06:30")),
    "ny-fall ambiguous end, 01:00 EST": (
        window("22:00", "01:30", NY), z("2026-11-01T06:00"), z("2026-11-01T06:30")),
    "ny-fall ambiguous end, the later 01:30 is outside": (
        window("22:00", "01:30", NY), z("2026-11-01T06:30"), None),
    "ny-fall end exactly at the overlap start takes 01:00 EST": (
        window("22:00", "01:00", NY), z("2026-11-01T05:59"), z("2026-11-01T06:00")),
    "ny-fall end at the overlap start, 01:00 EST is outside": (
        window("22:00", "01:00", NY), z("2026-11-01T06:00"), None),
    "ny-fall end at the overlap's end (02:00 EST)": (
        window("22:00", "02:00", NY), z("2026-11-01T06:30"), z("2026-11-01T07:00")),
    "ny-fall ambiguous start takes the earlier 01:30, just before it": (
        window("01:30", "05:00", NY), z("2026-11-01T05:29"), None),
    "ny-fall ambiguous start, at the earlier 01:30 (EDT)": (
        window("01:30", "05:00", NY), z("2026-11-01T05:30"), z("2026-11-01T10:00")),
    "ny-fall ambiguous start, 01:15 EST reads before start but is inside": (
        window("01:30", "05:00", NY), z("2026-11-01T06:15"), z("2026-11-01T10:00")),
    "ny daytime window after fall back (09:00-17:00 EST)": (
        window("09:00", "17:00", NY), z("2026-11-01T21:59"), z("2026-11-01T22:00")),
    "ny ordinary summer night, entered after start": (
        window("22:00", "07:00", NY), z("2026-06-02T02:30"), z("2026-06-02T11:00")),
    "ny ordinary summer night, entered after midnight": (
        window("22:00", "07:00", NY), z("2026-06-02T10:00"), z("2026-06-02T11:00")),
    "ny ordinary summer day is outside": (
        window("22:00", "07:00", NY), z("2026-06-02T16:00"), None),
    # --- Europe/London ---
    "london-spring overnight ends 07:00 BST (06:00Z)": (
        window("23:00", "07:00", LONDON), z("2026-03-29T05:59"), z("2026-03-29T06:00")),
    "london-spring overnight, 06:30Z is 07:30 BST, outside": (
        window("23:00", "07:00", LONDON), z("2026-03-29T06:30"), None),
    "london-spring overnight, at start (23:00 GMT)": (
        window("23:00", "07:00", LONDON), z("2026-03-28T23:00"), z("2026-03-29T06:00")),
    "london-spring end in the gap (01:30 -> 02:00 BST)": (
        window("00:00", "01:30", LONDON), z("2026-03-29T00:59"), z("2026-03-29T01:00")),
    "london-spring end in the gap, after it is outside": (
        window("00:00", "01:30", LONDON), z("2026-03-29T01:00"), None),
    "london-fall overnight, at start (23:00 BST)": (
        window("23:00", "07:00", LONDON), z("2026-10-24T22:00"), z("2026-10-25T07:00")),
    "london-fall overnight, just before start": (
        window("23:00", "07:00", LONDON), z("2026-10-24T21:59"), None),
    "london-fall overnight ends 07:00 GMT, not 07:00 BST": (
        window("23:00", "07:00", LONDON), z("2026-10-25T06:30"), z("2026-10-25T07:00")),
    "london-fall ambiguous end, first 01:30 (BST) is held to the second": (
        window("22:00", "01:30", LONDON), z("2026-10-25T00:30"), z("2026-10-25T01:30")),
    "london-fall ambiguous end, second 01:30 (GMT) is outside": (
        window("22:00", "01:30", LONDON), z("2026-10-25T01:30"), None),
    # --- Australia/Lord_Howe: 30-minute shifts ---
    "lord-howe-april overnight ends 07:00 +10:30": (
        window("22:00", "07:00", LORD_HOWE), z("2026-04-04T20:15"), z("2026-04-04T20:30")),
    "lord-howe-april overnight, at start (22:00 +11)": (
        window("22:00", "07:00", LORD_HOWE), z("2026-04-04T11:00"), z("2026-04-04T20:30")),
    "lord-howe-april overnight, exactly at end": (
        window("22:00", "07:00", LORD_HOWE), z("2026-04-04T20:30"), None),
    "lord-howe-april ambiguous end, first 01:50 (+11)": (
        window("22:00", "01:45", LORD_HOWE), z("2026-04-04T14:50"), z("2026-04-04T15:15")),
    "lord-howe-april ambiguous end, 01:30 +10:30": (
        window("22:00", "01:45", LORD_HOWE), z("2026-04-04T15:00"), z("2026-04-04T15:15")),
    "lord-howe-april ambiguous end, later 01:45 is outside": (
        window("22:00", "01:45", LORD_HOWE), z("2026-04-04T15:15"), None),
    "lord-howe-october end in the gap (02:15 -> 02:30 +11)": (
        window("22:00", "02:15", LORD_HOWE), z("2026-10-03T15:29"), z("2026-10-03T15:30")),
    "lord-howe-october end in the gap, after it is outside": (
        window("22:00", "02:15", LORD_HOWE), z("2026-10-03T15:30"), None),
    "lord-howe-october overnight ends 07:00 +11": (
        window("22:00", "07:00", LORD_HOWE), z("2026-10-03T19:59"), z("2026-10-03T20:00")),
    "lord-howe-october overnight, 07:15 +11 is outside": (
        window("22:00", "07:00", LORD_HOWE), z("2026-10-03T20:15"), None),
    # --- Asia/Kolkata: no DST, +05:30 ---
    "kolkata overnight, before start": (
        window("22:00", "07:00", KOLKATA), z("2026-03-07T16:29"), None),
    "kolkata overnight, at start": (
        window("22:00", "07:00", KOLKATA), z("2026-03-07T16:30"), z("2026-03-08T01:30")),
    "kolkata overnight, at end": (
        window("22:00", "07:00", KOLKATA), z("2026-03-08T01:30"), None),
    "kolkata daytime window": (
        window("09:00", "17:00", KOLKATA), z("2026-03-08T11:29"), z("2026-03-08T11:30")),
    "kolkata daytime window, before it": (
        window("09:00", "17:00", KOLKATA), z("2026-03-08T03:29"), None),
}  # fmt: skip


@pytest.mark.parametrize(("quiet", "instant", "expected"), HELD.values(), ids=HELD.keys())
def test_held_until(quiet: QuietHours, instant: datetime, expected: datetime | None) -> None:
    assert held_until(instant, quiet) == expected
    assert is_quiet(instant, quiet) is (expected is not None)


def test_held_until_is_utc_and_accepts_any_aware_instant() -> None:
    quiet = window("22:00", "07:00", "Europe/Paris")
    # The docs' worked example: 23:10 in Paris in June is 21:10Z; held to 07:00 local, 05:00Z.
    local = datetime(2026, 6, 1, 23, 10, tzinfo=ZoneInfo("Europe/Paris"))
    released = held_until(local, quiet)
    assert released == z("2026-06-02T05:00")
    assert released is not None and released.tzinfo is UTC


def test_a_window_ending_where_the_next_begins_holds_through_both() -> None:
    # 03:00-02:00 leaves 02:00-03:00 free, which on 2026-03-08 is the skipped hour in New York:
    # the night's window ends at 03:00 EDT, exactly where the day's begins.
    quiet = window("03:00", "02:00", NY)
    assert held_until(z("2026-03-08T06:00"), quiet) == z("2026-03-09T06:00")  # 02:00 EDT


ZONES = [NY, LONDON, LORD_HOWE, KOLKATA, "Europe/Paris", "Asia/Kathmandu"]


@st.composite
def _cases(draw: st.DrawFn) -> tuple[QuietHours, datetime]:
    zone = draw(st.sampled_from(ZONES))
    minutes = st.integers(0, 24 * 60 - 1)
    start, end = draw(minutes), draw(minutes)
    if start == end:
        end = (end + 1) % (24 * 60)
    quiet = QuietHours(time(*divmod(start, 60)), time(*divmod(end, 60)), zone)
    instant = draw(st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31))).replace(tzinfo=UTC)
    return quiet, instant


def _offset(instant: datetime, zone: str) -> timedelta | None:
    return instant.astimezone(ZoneInfo(zone)).utcoffset()


@given(_cases())
def test_properties_hold_for_any_window_and_instant(case: tuple[QuietHours, datetime]) -> None:
    quiet, instant = case
    released = held_until(instant, quiet)
    assert (released is not None) is is_quiet(instant, quiet)
    if released is not None:
        assert instant < released <= instant + timedelta(hours=48)
        assert not is_quiet(released, quiet)
        assert is_quiet(released - timedelta(microseconds=1), quiet)
    # Away from any transition, an instant is quiet exactly when its wall time is in the window.
    zone = quiet.timezone
    before, after = instant - timedelta(hours=26), instant + timedelta(hours=26)
    if _offset(before, zone) == _offset(after, zone):
        wall = instant.astimezone(ZoneInfo(zone)).time()
        if quiet.start < quiet.end:
            expected = quiet.start <= wall < quiet.end
        else:
            expected = wall >= quiet.start or wall < quiet.end
        assert is_quiet(instant, quiet) is expected


# (after, at, zone, expected)
NEXT = {
    "ny 09:00 on the 23-hour day is 13:00Z, not 14:00Z": (
        z("2026-03-07T15:00"), "09:00", NY, z("2026-03-08T13:00")),
    "ny 02:30 does not exist on 03-08: 03:00 EDT": (
        z("2026-03-07T12:00"), "02:30", NY, z("2026-03-08T07:00")),
    "ny 02:30 the day after the gap exists again": (
        z("2026-03-08T07:00"), "02:30", NY, z("2026-03-09T06:30")),
    "ny 01:30 occurs twice on 11-01: the later": (
        z("2026-11-01T04:00"), "01:30", NY, z("2026-11-01T06:30")),
    "ny 01:30 after the first occurrence is still the later one": (
        z("2026-11-01T05:30"), "01:30", NY, z("2026-11-01T06:30")),
    "ny strictly after: at 01:30 EST, the next day's": (
        z("2026-11-01T06:30"), "01:30", NY, z("2026-11-02T06:30")),
    "ny 09:00 on the 25-hour day is 14:00Z": (
        z("2026-10-31T14:00"), "09:00", NY, z("2026-11-01T14:00")),
    "london 01:30 in the gap: 02:00 BST": (
        z("2026-03-28T12:00"), "01:30", LONDON, z("2026-03-29T01:00")),
    "london 01:30 twice on 10-25: the later (GMT)": (
        z("2026-10-24T12:00"), "01:30", LONDON, z("2026-10-25T01:30")),
    "lord-howe 09:00 after DST ends is +10:30": (
        z("2026-04-04T00:00"), "09:00", LORD_HOWE, z("2026-04-04T22:30")),
    "lord-howe 01:45 twice on 04-05: the later": (
        z("2026-04-04T12:00"), "01:45", LORD_HOWE, z("2026-04-04T15:15")),
    "lord-howe 02:10 in the 30-minute gap: 02:30 +11": (
        z("2026-10-03T12:00"), "02:10", LORD_HOWE, z("2026-10-03T15:30")),
    "kolkata exactly at the time: the next day": (
        z("2026-03-08T03:30"), "09:00", KOLKATA, z("2026-03-09T03:30")),
    "kolkata just before the time": (
        z("2026-03-08T03:29:59"), "09:00", KOLKATA, z("2026-03-08T03:30")),
}  # fmt: skip


@pytest.mark.parametrize(("after", "at", "zone", "expected"), NEXT.values(), ids=NEXT.keys())
def test_next_local_time(after: datetime, at: str, zone: str, expected: datetime) -> None:
    result = next_local_time(after, time.fromisoformat(at), zone)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize("zone", [NY, LONDON, LORD_HOWE, KOLKATA])
@pytest.mark.parametrize("at", ["00:00", "01:30", "02:15", "09:00", "23:59"])
def test_next_local_time_fires_once_per_local_day_all_year(zone: str, at: str) -> None:
    tz = ZoneInfo(zone)
    moment = datetime(2026, 1, 1, tzinfo=tz).astimezone(UTC)
    days = []
    for _ in range(365):
        moment = next_local_time(moment, time.fromisoformat(at), zone)
        days.append(moment.astimezone(tz).date())
    assert len(set(days)) == 365
    assert days == sorted(days)


@pytest.mark.parametrize(
    ("start", "end", "zone", "field"),
    [
        (time(22), time(7), "Mars/Olympus_Mons", "QuietHours.timezone"),
        (time(22), time(7), "America", "QuietHours.timezone"),
        (time(22), time(7), "../etc/passwd", "QuietHours.timezone"),
        (time(22), time(22), "UTC", "start and end"),
        (time(22, tzinfo=UTC), time(7), "UTC", "QuietHours.start"),
        ("22:00", time(7), "UTC", "QuietHours.start"),
    ],
)
def test_quiet_hours_validation(start: time, end: time, zone: str, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        QuietHours(start, end, zone)


def test_instants_must_be_aware() -> None:
    quiet = window("22:00", "07:00", "UTC")
    with pytest.raises(InvalidArgument, match="instant: must be timezone-aware"):
        held_until(datetime(2026, 1, 1, 23), quiet)
    with pytest.raises(InvalidArgument, match="instant: must be timezone-aware"):
        is_quiet(datetime(2026, 1, 1, 23), quiet)
    with pytest.raises(InvalidArgument, match="after: must be timezone-aware"):
        next_local_time(datetime(2026, 1, 1), time(9), "UTC")


def test_next_local_time_validation() -> None:
    with pytest.raises(InvalidArgument, match="timezone: 'Nowhere' is not a known"):
        next_local_time(z("2026-01-01T00:00"), time(9), "Nowhere")
    with pytest.raises(InvalidArgument, match="without tzinfo"):
        next_local_time(z("2026-01-01T00:00"), time(9, tzinfo=UTC), "UTC")
