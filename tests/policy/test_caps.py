"""Delivery caps: N per rolling window, on all channels or one (§13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chimeway.errors import InvalidArgument
from chimeway.policy.caps import CapRule, evaluate_cap
from chimeway.policy.reasons import PolicyReason

HOUR = timedelta(hours=1)

# (rule, delivery channel, recent count, allowed)
TABLE = {
    "below the cap": (CapRule(3, HOUR), "email", 2, True),
    "at the cap: this one would be the fourth": (CapRule(3, HOUR), "email", 3, False),
    "over the cap": (CapRule(3, HOUR), "sms", 7, False),
    "nothing sent yet": (CapRule(1, HOUR), "email", 0, True),
    "cap of one reached": (CapRule(1, HOUR), "email", 1, False),
    "channel cap on its channel": (CapRule(2, HOUR, "sms"), "sms", 2, False),
    "channel cap does not limit other channels": (CapRule(2, HOUR, "sms"), "email", 9, True),
}


@pytest.mark.parametrize(("rule", "channel", "count", "allowed"), TABLE.values(), ids=TABLE.keys())
def test_cap(rule: CapRule, channel: str, count: int, allowed: bool) -> None:
    decision = evaluate_cap(rule, channel=channel, recent_count=count)
    assert decision.allowed is allowed
    assert decision.reason == (None if allowed else PolicyReason.DELIVERY_CAP_REACHED)
    assert decision.rule == rule
    assert decision.recent_count == count


def test_context_is_the_evidence() -> None:
    decision = evaluate_cap(CapRule(5, timedelta(minutes=90), "sms"), channel="sms", recent_count=5)
    assert decision.context() == {
        "rule": "delivery_cap_reached",
        "max_count": 5,
        "window_seconds": 5400.0,
        "channel": "sms",
        "recent_count": 5,
    }


def test_window_start_is_now_minus_window() -> None:
    now = datetime(2026, 3, 8, 12, tzinfo=UTC)
    assert CapRule(3, 24 * HOUR).window_start(now) == datetime(2026, 3, 7, 12, tzinfo=UTC)
    with pytest.raises(InvalidArgument, match="now: must be a timezone-aware"):
        CapRule(3, HOUR).window_start(datetime(2026, 3, 8, 12))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, HOUR), r"CapRule\.max_count: must be at least 1"),
        ((True, HOUR), r"CapRule\.max_count: expected an int"),
        ((3, timedelta(0)), r"CapRule\.window: expected a positive timedelta"),
        ((3, 60), r"CapRule\.window: expected a positive timedelta"),
        ((3, HOUR, ""), r"CapRule\.channel: expected a non-empty string"),
    ],
)
def test_rule_validation(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        CapRule(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [-1, True, 1.0])
def test_count_validation(count: object) -> None:
    with pytest.raises(InvalidArgument, match="recent_count: expected an int >= 0"):
        evaluate_cap(CapRule(3, HOUR), channel="email", recent_count=count)  # type: ignore[arg-type]
