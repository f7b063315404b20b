"""Opt-outs: which preference decides whether a delivery may be sent (design §13), pure.

A rule turns one *kind* of thing on or off, for the recipient or as the tenant's default:

- a **channel** ("email off");
- a **category**, on every channel or on one ("marketing off", "marketing by sms off");
- a **workflow** (the workflow or notifier key), on every channel or on one.

Evaluation, for a delivery on ``channel`` of ``workflow`` (in ``category``, if any):

1. The kinds are checked in the order channel, category, workflow (the reference's
   ``Policy.evaluate`` checks channel, then category). Each kind gives one answer, and the
   first kind whose answer is "off" suppresses with its reason (``channel_disabled``,
   ``category_disabled``, ``workflow_disabled``). An "on" never overrides an "off" of another
   kind: a recipient who turned email off gets no email, whatever a workflow rule says.
2. Within a kind, the recipient's matching rules are consulted first; the tenant's defaults
   only when the recipient has no matching rule of that kind.
3. Among one owner's matching rules of a kind, a rule for this channel beats a rule for every
   channel; then the one set last wins; on an exact tie, "off" wins.
4. With no matching rule at all, a kind is on (opt-out model, as in the reference).

``critical=True`` (a notifier that must reach people: password resets, security alerts)
allows the delivery whatever the rules say; the decision still names the opt-out it bypassed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from chimeway.errors import InvalidArgument
from chimeway.policy.reasons import PolicyReason

Kind = Literal["channel", "category", "workflow"]

_REASONS: dict[Kind, PolicyReason] = {
    "channel": PolicyReason.CHANNEL_DISABLED,
    "category": PolicyReason.CATEGORY_DISABLED,
    "workflow": PolicyReason.WORKFLOW_DISABLED,
}


class PreferenceOwner(StrEnum):
    """Whose rule it is: the recipient's own, or the tenant's default."""

    RECIPIENT = "recipient"
    TENANT = "tenant"


@dataclass(frozen=True, slots=True)
class PreferenceScope:
    """What a rule is about: a channel; or a category or a workflow, optionally on one channel."""

    channel: str | None = None
    category: str | None = None
    workflow: str | None = None

    def __post_init__(self) -> None:
        for name in ("channel", "category", "workflow"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidArgument(
                    f"PreferenceScope.{name}: expected a non-empty string or None, got {value!r}"
                )
        if self.category is not None and self.workflow is not None:
            raise InvalidArgument(
                "PreferenceScope: a rule is about a category or a workflow, not both"
            )
        if self.channel is None and self.category is None and self.workflow is None:
            raise InvalidArgument("PreferenceScope: give a channel, a category or a workflow")

    @property
    def kind(self) -> Kind:
        if self.workflow is not None:
            return "workflow"
        if self.category is not None:
            return "category"
        return "channel"

    def matches(self, *, channel: str, category: str | None, workflow: str) -> bool:
        """Whether the rule applies to a delivery on ``channel`` of ``workflow`` in ``category``."""
        return (
            (self.channel is None or self.channel == channel)
            and (self.category is None or self.category == category)
            and (self.workflow is None or self.workflow == workflow)
        )


@dataclass(frozen=True, slots=True)
class PreferenceRule:
    """One preference: ``scope`` turned on or off, set at ``set_at`` (aware); ``source`` says
    who set it, as stored (``api``, ``unsubscribed:link``, ``complained:<provider>``)."""

    scope: PreferenceScope
    enabled: bool
    set_at: datetime
    source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidArgument(f"PreferenceRule.enabled: expected a bool, got {self.enabled!r}")
        if not isinstance(self.set_at, datetime) or self.set_at.utcoffset() is None:
            raise InvalidArgument("PreferenceRule.set_at: must be a timezone-aware datetime")
        if self.source is not None and (not isinstance(self.source, str) or not self.source):
            raise InvalidArgument(
                f"PreferenceRule.source: expected a non-empty string or None, got {self.source!r}"
            )


@dataclass(frozen=True, slots=True)
class PreferenceDecision:
    """Whether preferences allow the delivery, and the evidence.

    ``reason``, ``rule`` and ``owner`` name the opt-out that decided: the one that suppresses,
    or, with ``critical_bypass``, the one a critical notifier went past. All ``None`` when no
    opt-out applies.
    """

    allowed: bool
    reason: PolicyReason | None = None
    rule: PreferenceRule | None = None
    owner: PreferenceOwner | None = None
    critical_bypass: bool = False

    def context(self) -> dict[str, str | bool | None]:
        """JSON-ready evidence for the delivery's planning context (empty when none)."""
        if self.rule is None or self.owner is None or self.reason is None:
            return {}
        return {
            "rule": str(self.reason),
            "owner": str(self.owner),
            "channel": self.rule.scope.channel,
            "category": self.rule.scope.category,
            "workflow": self.rule.scope.workflow,
            "set_at": self.rule.set_at.isoformat(),
            "critical_bypass": self.critical_bypass,
        }


def evaluate_preferences(
    *,
    channel: str,
    category: str | None,
    workflow: str,
    critical: bool = False,
    recipient: Iterable[PreferenceRule] = (),
    tenant: Iterable[PreferenceRule] = (),
) -> PreferenceDecision:
    """Decide a delivery against the recipient's rules and the tenant's defaults (see module)."""
    for name, value in (("channel", channel), ("workflow", workflow)):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{name}: expected a non-empty string, got {value!r}")
    if category is not None and (not isinstance(category, str) or not category):
        raise InvalidArgument(f"category: expected a non-empty string or None, got {category!r}")

    owners = (
        (PreferenceOwner.RECIPIENT, tuple(recipient)),
        (PreferenceOwner.TENANT, tuple(tenant)),
    )
    for kind, reason in _REASONS.items():
        for owner, rules in owners:
            matching = [
                rule
                for rule in rules
                if rule.scope.kind == kind
                and rule.scope.matches(channel=channel, category=category, workflow=workflow)
            ]
            if not matching:
                continue
            deciding = max(
                matching,
                key=lambda r: (r.scope.channel is not None, r.set_at, not r.enabled),
            )
            if not deciding.enabled:
                return PreferenceDecision(
                    allowed=critical,
                    reason=reason,
                    rule=deciding,
                    owner=owner,
                    critical_bypass=critical,
                )
            break  # this kind is on; the tenant's default is not consulted
    return PreferenceDecision(allowed=True)


def unsubscribe_scope(
    channel: str, *, category: str | None, workflow: str | None
) -> PreferenceScope:
    """What one message's unsubscribe link (and a complaint about it) turns off: its channel
    for its category, or for its workflow when it has no category, or the whole channel when
    neither is known. Narrow on purpose: "no more of these by email", not "no email at all"."""
    if category:
        return PreferenceScope(channel, category=category)
    if workflow:
        return PreferenceScope(channel, workflow=workflow)
    return PreferenceScope(channel)


@dataclass(frozen=True, slots=True)
class PreferenceUpdate:
    """One rule to set with ``cw.preferences.set_many``: ``scope`` on or off for
    ``recipient_id`` (``None``: the tenant's default)."""

    recipient_id: str | None
    scope: PreferenceScope
    enabled: bool

    def __post_init__(self) -> None:
        if not isinstance(self.scope, PreferenceScope):
            raise InvalidArgument(
                f"PreferenceUpdate.scope: expected a PreferenceScope, got {self.scope!r}"
            )
        if not isinstance(self.enabled, bool):
            raise InvalidArgument(
                f"PreferenceUpdate.enabled: expected a bool, got {self.enabled!r}"
            )
