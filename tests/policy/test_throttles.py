"""chimeway.policy.free_instants: when throttled sends fit, and the limit is never exceeded
by what it proposes, whatever was granted before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chimeway.errors import InvalidArgument
from chimeway.policy import free_instants

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_full_window_frees_a_slot_as_each_send_gets_old() -> None:
    recent = [(at(0), 2), (at(0.25), 1)]  # 3 per second: full at 0.5
    assert free_instants(recent, now=at(0.5), limit=3, per=SECOND, count=4) == [
        at(1),
        at(1),
        at(1.25),
        at(2),
    ]


def test_room_now_is_now() -> None:
    assert free_instants([(at(0), 1)], now=at(0.1), limit=3, per=SECOND, count=2) == [
        at(0.1),
        at(0.1),
    ]
    assert free_instants([], now=T0, limit=1, per=SECOND, count=3) == [at(0), at(1), at(2)]


def test_grants_stamped_after_now_count_too() -> None:
    """Another claimer's clock ran ahead: its send at 0.9 still counts at 0.5."""
    assert free_instants([(at(0.9), 1)], now=at(0.5), limit=1, per=SECOND, count=1) == [at(1.9)]


def test_old_grants_do_not_count() -> None:
    assert free_instants([(at(-2), 5)], now=T0, limit=1, per=SECOND, count=1) == [T0]


def max_in_window(instants: list[datetime], per: timedelta) -> int:
    ordered = sorted(instants)
    return max(
        (sum(1 for other in ordered if start <= other < start + per) for start in ordered),
        default=0,
    )


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 6),
    grants=st.lists(st.tuples(st.integers(-1500, 1500), st.integers(1, 3)), max_size=6),
    count=st.integers(0, 12),
)
def test_sends_at_the_proposed_instants_never_exceed_the_limit(
    limit: int, grants: list[tuple[int, int]], count: int
) -> None:
    """Granted sends that respected the limit, plus one send at each proposed instant: no
    window of ``per`` holds more than ``limit``; the instants are in order and not before now."""
    sends: list[datetime] = []
    for millis, n in sorted(grants):
        moment = at(millis / 1000)
        room = limit - sum(1 for s in sends if moment - SECOND < s)
        sends += [moment] * max(0, min(n, room))
    recent = [(s, 1) for s in sends]
    found = free_instants(recent, now=T0, limit=limit, per=SECOND, count=count)
    assert len(found) == count
    assert found == sorted(found)
    assert all(moment >= T0 for moment in found)
    assert max_in_window(sends + found, SECOND) <= limit


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        free_instants([], now=datetime(2026, 1, 1), limit=1, per=SECOND, count=1)
    with pytest.raises(InvalidArgument, match="must be positive"):
        free_instants([], now=T0, limit=0, per=SECOND, count=1)
