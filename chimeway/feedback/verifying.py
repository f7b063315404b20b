"""Pieces every provider's verification needs: header lookup and timestamp freshness."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from chimeway.feedback.errors import WebhookUnauthorized

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock of the providers that check a signed timestamp."""
    return datetime.now(UTC)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any letter case, or ``None`` when it is absent."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def required_header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name``; :class:`WebhookUnauthorized` when it is absent or empty."""
    value = header(headers, name)
    if not value:
        raise WebhookUnauthorized(f"the {name} header is missing")
    return value


def check_fresh(timestamp: str, *, field: str, clock: Clock, tolerance: timedelta | None) -> None:
    """Refuse a signed Unix ``timestamp`` further than ``tolerance`` from ``clock()``, either
    way (``None`` skips the check, not the parsing)."""
    try:
        seconds = int(timestamp)
    except ValueError:
        raise WebhookUnauthorized(f"{field} is not a Unix timestamp in seconds") from None
    if tolerance is None:
        return
    now = clock().timestamp()
    if abs(now - seconds) > tolerance.total_seconds():
        raise WebhookUnauthorized(f"{field} is outside the {tolerance} tolerance")
