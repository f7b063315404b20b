"""One delivery's policy decision, at planning or at claim (design §13), pure.

Planning asks when a delivery is planned, and asks again when a worker claims it for
sending, so a change in between wins. The checks run in this order; the first that stops
the delivery decides:

1. **Preferences** (:func:`~chimeway.policy.evaluate_preferences`): channel, then category,
   then workflow; an opt-out suppresses (``channel_disabled``, ``category_disabled``,
   ``workflow_disabled``). A ``critical`` notifier goes past every opt-out.
2. **Address** (planning only): the channel's adapter needs an address the recipient's
   profile lacks: ``suppressed(no_address)``.
3. **Caps** (:func:`~chimeway.policy.evaluate_cap`), each cap that applies to the channel:
   ``suppressed(delivery_cap_reached)``. A ``critical`` notifier is not capped.
4. **Quiet hours** (:func:`~chimeway.policy.held_until`): inside the window the delivery is
   deferred to the window's end, unless the notifier bypasses quiet hours.

Throttles come after all this, when a claimed delivery is about to be sent
(:mod:`chimeway.policy.throttles`). Every verdict carries its evidence as JSON, which the
delivery's history keeps and ``explain_delivery`` puts into one sentence
(:mod:`chimeway.policy.sentences`).

A delivery that no opt-out rule, quiet hours or cap can apply to, on a channel that needs
no address (or whose address the recipient has) and has no throttle, is not asked at all: the
trigger, planning and the claim test that in SQL (``chimeway_policy_scope``, migrations
0018 and 0021, inlined into their statements) and go straight on. Opt-ins are left out of
that test: an "on" never changes a verdict (:func:`evaluate_preferences` decides each kind by
its opt-outs; an opt-in at most overrides a tenant's opt-out, which makes the test true).
Policy data of a new kind must make that function true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any, Literal

from chimeway.errors import InvalidArgument
from chimeway.policy.caps import CapRule, evaluate_cap
from chimeway.policy.preferences import PreferenceDecision, PreferenceRule, evaluate_preferences
from chimeway.policy.quiet_hours import QuietHours, held_until

Checkpoint = Literal["planning", "claim"]
Action = Literal["send", "suppress", "defer"]

#: ``planning_reason`` of a delivery deferred by quiet hours, and by a throttle.
QUIET_HOURS = "quiet_hours"
THROTTLED = "throttled"
#: The suppression reason planning gives a delivery whose channel needs a missing address.
NO_ADDRESS = "no_address"


@dataclass(frozen=True, slots=True)
class DeliveryFacts:
    """What policy decides a delivery on, fixed when it is planned."""

    channel: str
    #: The workflow key, or the notifier key for a delivery outside a workflow.
    workflow: str
    category: str | None = None
    #: Bypasses opt-outs and caps (password resets, security alerts).
    critical: bool = False
    #: Bypasses quiet hours (a sign-in code is wanted now, whatever the hour).
    bypass_quiet_hours: bool = False


@dataclass(frozen=True, slots=True)
class CapCount:
    """A cap that applies to the recipient, with the deliveries already in its window."""

    rule: CapRule
    recent_count: int
    #: ``recipient`` or ``tenant``: whose cap it is.
    owner: str = "recipient"


@dataclass(frozen=True, slots=True)
class RecipientPolicy:
    """Everything set for one recipient in one tenant: their rules, the tenant's default
    rules, the caps that apply, and the quiet hours in force (already in their zone)."""

    recipient_rules: tuple[PreferenceRule, ...] = ()
    tenant_rules: tuple[PreferenceRule, ...] = ()
    caps: tuple[CapCount, ...] = ()
    quiet_hours: QuietHours | None = None
    #: ``recipient`` or ``tenant``: whose quiet hours they are.
    quiet_hours_owner: str = "recipient"


@dataclass(frozen=True, slots=True)
class Verdict:
    """``send``, ``suppress`` (``reason``: the delivery reason) or ``defer`` (``reason``:
    the planning reason, until ``until``), with the evidence as JSON in ``context``."""

    action: Action
    reason: str | None = None
    until: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)


def decide(
    facts: DeliveryFacts,
    policy: RecipientPolicy,
    *,
    now: datetime,
    checkpoint: Checkpoint,
    lacking_address: str | None = None,
) -> Verdict:
    """Decide one delivery at ``now`` (aware), in the order of the module's docstring."""
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InvalidArgument("now: must be a timezone-aware datetime")
    preferences = evaluate_preferences(
        channel=facts.channel,
        category=facts.category,
        workflow=facts.workflow,
        critical=facts.critical,
        recipient=policy.recipient_rules,
        tenant=policy.tenant_rules,
    )
    if not preferences.allowed:
        return Verdict(
            "suppress",
            str(preferences.reason),
            context=_preference_context(preferences, checkpoint),
        )
    bypassed = (
        {"critical_bypass": _preference_context(preferences, checkpoint)}
        if preferences.critical_bypass
        else {}
    )
    if lacking_address is not None:
        return Verdict("suppress", NO_ADDRESS, context={"needs": lacking_address})
    if not facts.critical:
        for cap in policy.caps:
            decision = evaluate_cap(cap.rule, channel=facts.channel, recent_count=cap.recent_count)
            if not decision.allowed:
                return Verdict(
                    "suppress",
                    str(decision.reason),
                    context={**decision.context(), "owner": cap.owner, "checkpoint": checkpoint},
                )
    quiet = policy.quiet_hours
    if quiet is not None and not facts.bypass_quiet_hours:
        until = held_until(now, quiet)
        if until is not None:
            return Verdict(
                "defer",
                QUIET_HOURS,
                until,
                {
                    **quiet_context(quiet, until, policy.quiet_hours_owner),
                    "checkpoint": checkpoint,
                    **bypassed,
                },
            )
    return Verdict("send", context=bypassed)


def quiet_context(quiet: QuietHours, until: datetime, owner: str) -> dict[str, Any]:
    """The evidence of a hold by quiet hours: the window, its zone and its end."""
    return {
        "rule": QUIET_HOURS,
        "start": _clock(quiet.start),
        "end": _clock(quiet.end),
        "timezone": quiet.timezone,
        "owner": owner,
        "until": until.isoformat(),
    }


def _preference_context(decision: PreferenceDecision, checkpoint: Checkpoint) -> dict[str, Any]:
    context: dict[str, Any] = {**decision.context(), "checkpoint": checkpoint}
    if decision.rule is not None and decision.rule.source is not None:
        context["source"] = decision.rule.source
    return context


def _clock(at: time) -> str:
    return at.isoformat(timespec="minutes" if not at.second and not at.microsecond else "seconds")
