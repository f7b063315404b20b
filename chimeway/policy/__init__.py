"""The pure core of notification policy (design §13, §14): quiet hours, preferences, caps and
signed tokens. No database, no clock: instants are parameters. Planning and storage call it.
"""

from chimeway.policy.caps import CapDecision, CapRule, evaluate_cap
from chimeway.policy.errors import InvalidToken, TokenExpired
from chimeway.policy.preferences import (
    PreferenceDecision,
    PreferenceOwner,
    PreferenceRule,
    PreferenceScope,
    evaluate_preferences,
)
from chimeway.policy.quiet_hours import (
    QuietHours,
    held_until,
    is_quiet,
    next_local_time,
    zone_for,
)
from chimeway.policy.reasons import PolicyReason
from chimeway.policy.tokens import InboxClaims, TokenSigner, UnsubscribeClaims

__all__ = [
    "CapDecision",
    "CapRule",
    "InboxClaims",
    "InvalidToken",
    "PolicyReason",
    "PreferenceDecision",
    "PreferenceOwner",
    "PreferenceRule",
    "PreferenceScope",
    "QuietHours",
    "TokenExpired",
    "TokenSigner",
    "UnsubscribeClaims",
    "evaluate_cap",
    "evaluate_preferences",
    "held_until",
    "is_quiet",
    "next_local_time",
    "zone_for",
]
