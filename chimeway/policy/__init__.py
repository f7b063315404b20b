"""The pure core of notification policy (design §13, §14): quiet hours, preferences, caps and
signed tokens. No database, no clock: instants are parameters. Planning and storage call it.
"""

from chimeway.policy.errors import InvalidToken, TokenExpired
from chimeway.policy.quiet_hours import (
    QuietHours,
    held_until,
    is_quiet,
    next_local_time,
    zone_for,
)

__all__ = [
    "InvalidToken",
    "QuietHours",
    "TokenExpired",
    "held_until",
    "is_quiet",
    "next_local_time",
    "zone_for",
]
