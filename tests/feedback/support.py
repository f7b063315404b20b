"""What the provider tests share: a fixed clock and the personal-data check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from chimeway.feedback import FeedbackEvent

# What the sample payloads say about people; none of it may survive parsing.
PERSONAL = (
    "john@example.com",
    "sender@example.com",
    "188.2.95.4",
    "Mozilla/5.0",
    "https://example.com/reset",
    "token=abc123",
    "+15558675310",
    "5558675310",
    "Your password reset",
)


def clock_at(unix_seconds: int) -> Callable[[], datetime]:
    instant = datetime.fromtimestamp(unix_seconds, UTC)
    return lambda: instant


def assert_no_personal_data(events: list[FeedbackEvent]) -> None:
    text = repr(events)
    leaked = [needle for needle in PERSONAL if needle in text]
    assert not leaked, f"personal data in parsed events: {leaked}"
