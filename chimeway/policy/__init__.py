"""The pure core of notification policy (design §13, §14): quiet hours, preferences, caps,
throttles, the decision that combines them, its sentences, and signed tokens. No database,
no clock: instants are parameters. Planning and storage call it.
"""

from chimeway.policy.caps import CapDecision, CapRule, evaluate_cap
from chimeway.policy.decision import (
    CapCount,
    DeliveryFacts,
    RecipientPolicy,
    Verdict,
    decide,
)
from chimeway.policy.errors import InvalidToken, TokenExpired
from chimeway.policy.preferences import (
    PreferenceDecision,
    PreferenceOwner,
    PreferenceRule,
    PreferenceScope,
    PreferenceUpdate,
    evaluate_preferences,
    unsubscribe_scope,
)
from chimeway.policy.quiet_hours import (
    QuietHours,
    held_until,
    is_quiet,
    next_local_time,
    zone_for,
)
from chimeway.policy.reasons import PolicyReason
from chimeway.policy.sentences import describe
from chimeway.policy.throttles import free_instants
from chimeway.policy.tokens import InboxClaims, TokenSigner, UnsubscribeClaims

__all__ = [
    "CapCount",
    "CapDecision",
    "CapRule",
    "DeliveryFacts",
    "InboxClaims",
    "InvalidToken",
    "PolicyReason",
    "PreferenceDecision",
    "PreferenceOwner",
    "PreferenceRule",
    "PreferenceScope",
    "PreferenceUpdate",
    "QuietHours",
    "RecipientPolicy",
    "TokenExpired",
    "TokenSigner",
    "UnsubscribeClaims",
    "Verdict",
    "decide",
    "describe",
    "evaluate_cap",
    "evaluate_preferences",
    "free_instants",
    "held_until",
    "is_quiet",
    "next_local_time",
    "unsubscribe_scope",
    "zone_for",
]
