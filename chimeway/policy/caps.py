"""Delivery caps: at most N deliveries to a recipient per rolling window (design §13), pure.

The caller counts the recipient's deliveries (on ``rule.channel`` when the rule has one, on
every channel otherwise) created at or after ``rule.window_start(now)``, not counting the
delivery being decided. The cap is reached when that count is ``max_count`` or more, so the
delivery would be number ``max_count + 1`` in the window (the reference's ``count >= cap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from chimeway.errors import InvalidArgument
from chimeway.policy.reasons import PolicyReason


@dataclass(frozen=True, slots=True)
class CapRule:
    """At most ``max_count`` deliveries per ``window``, on ``channel`` or on all channels."""

    max_count: int
    window: timedelta
    channel: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int):
            raise InvalidArgument(f"CapRule.max_count: expected an int, got {self.max_count!r}")
        if self.max_count < 1:
            raise InvalidArgument(f"CapRule.max_count: must be at least 1, got {self.max_count}")
        if not isinstance(self.window, timedelta) or self.window <= timedelta(0):
            raise InvalidArgument(
                f"CapRule.window: expected a positive timedelta, got {self.window!r}"
            )
        if self.channel is not None and (not isinstance(self.channel, str) or not self.channel):
            raise InvalidArgument(
                f"CapRule.channel: expected a non-empty string or None, got {self.channel!r}"
            )

    def applies_to(self, channel: str) -> bool:
        return self.channel is None or self.channel == channel

    def window_start(self, now: datetime) -> datetime:
        """The first instant counted at ``now`` (inclusive)."""
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise InvalidArgument("now: must be a timezone-aware datetime")
        return now - self.window


@dataclass(frozen=True, slots=True)
class CapDecision:
    """Whether ``rule`` allows the delivery, with the count it was decided on."""

    allowed: bool
    rule: CapRule
    recent_count: int

    @property
    def reason(self) -> PolicyReason | None:
        return None if self.allowed else PolicyReason.DELIVERY_CAP_REACHED

    def context(self) -> dict[str, str | int | float | None]:
        """JSON-ready evidence for the delivery's planning context."""
        return {
            "rule": str(PolicyReason.DELIVERY_CAP_REACHED),
            "max_count": self.rule.max_count,
            "window_seconds": self.rule.window.total_seconds(),
            "channel": self.rule.channel,
            "recent_count": self.recent_count,
        }


def evaluate_cap(rule: CapRule, *, channel: str, recent_count: int) -> CapDecision:
    """Decide a delivery on ``channel`` given ``recent_count`` deliveries in the window."""
    if isinstance(recent_count, bool) or not isinstance(recent_count, int) or recent_count < 0:
        raise InvalidArgument(f"recent_count: expected an int >= 0, got {recent_count!r}")
    reached = rule.applies_to(channel) and recent_count >= rule.max_count
    return CapDecision(allowed=not reached, rule=rule, recent_count=recent_count)
