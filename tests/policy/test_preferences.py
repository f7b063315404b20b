"""Preference evaluation: the order of rules, every reason, and the critical bypass (§13)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chimeway.errors import InvalidArgument
from chimeway.policy.preferences import (
    PreferenceDecision,
    PreferenceOwner,
    PreferenceRule,
    PreferenceScope,
    evaluate_preferences,
)
from chimeway.policy.reasons import PolicyReason
from chimeway.types import DeliveryReason

EARLY = datetime(2026, 1, 1, tzinfo=UTC)
LATE = datetime(2026, 2, 1, tzinfo=UTC)


def off(
    channel: str | None = None,
    *,
    category: str | None = None,
    workflow: str | None = None,
    at: datetime = EARLY,
) -> PreferenceRule:
    return PreferenceRule(PreferenceScope(channel, category, workflow), False, at)


def on(
    channel: str | None = None,
    *,
    category: str | None = None,
    workflow: str | None = None,
    at: datetime = EARLY,
) -> PreferenceRule:
    return PreferenceRule(PreferenceScope(channel, category, workflow), True, at)


R, T = PreferenceOwner.RECIPIENT, PreferenceOwner.TENANT
CH, CAT, WF = (
    PolicyReason.CHANNEL_DISABLED,
    PolicyReason.CATEGORY_DISABLED,
    PolicyReason.WORKFLOW_DISABLED,
)

# The delivery under test unless a row says otherwise: email, category "marketing", workflow
# "weekly-digest". Row: (recipient rules, tenant rules, delivery overrides,
#                        expected reason or None, expected owner, index of the deciding rule
#                        in recipient + tenant)
TABLE = {
    "no rules: allowed": ([], [], {}, None, None, None),
    "recipient email off": ([off("email")], [], {}, CH, R, 0),
    "recipient sms off does not touch email": ([off("sms")], [], {}, None, None, None),
    "tenant default email off": ([], [off("email")], {}, CH, T, 0),
    "recipient email on beats tenant email off": (
        [on("email")], [off("email")], {}, None, None, None),
    "recipient email on does not lift tenant's category off": (
        [on("email")], [off(category="marketing")], {}, CAT, T, 1),
    "recipient category off": ([off(category="marketing")], [], {}, CAT, R, 0),
    "category off, but on for this channel: on": (
        [off(category="marketing"), on("email", category="marketing")], [], {},
        None, None, None),
    "category on, but off for this channel: off": (
        [on(category="marketing"), off("email", category="marketing")], [], {}, CAT, R, 1),
    "category off on another channel only": (
        [off("sms", category="marketing")], [], {}, None, None, None),
    "no category on the delivery: category rules never match": (
        [off(category="marketing")], [], {"category": None}, None, None, None),
    "another category": ([off(category="billing")], [], {}, None, None, None),
    "recipient's category rule beats tenant's more specific one": (
        [on(category="marketing")], [off("email", category="marketing")], {},
        None, None, None),
    "recipient's rule for another channel leaves the tenant default in force": (
        [on("sms", category="marketing")], [off(category="marketing")], {}, CAT, T, 1),
    "recipient workflow off": ([off(workflow="weekly-digest")], [], {}, WF, R, 0),
    "recipient workflow off on email": (
        [off("email", workflow="weekly-digest")], [], {}, WF, R, 0),
    "recipient workflow off on email, delivery by sms": (
        [off("email", workflow="weekly-digest")], [], {"channel": "sms"}, None, None, None),
    "another workflow": ([off(workflow="password-reset")], [], {}, None, None, None),
    "workflow on does not lift category off": (
        [off(category="marketing"), on(workflow="weekly-digest")], [], {}, CAT, R, 0),
    "tenant workflow+email on does not lift recipient email off": (
        [off("email")], [on("email", workflow="weekly-digest")], {}, CH, R, 0),
    "tenant workflow off, recipient's sms rule does not match email": (
        [on("sms", workflow="weekly-digest")], [off(workflow="weekly-digest")], {}, WF, T, 1),
    "channel is checked before category and workflow": (
        [off(workflow="weekly-digest"), off(category="marketing"), off("email")], [], {},
        CH, R, 2),
    "category is checked before workflow": (
        [off(workflow="weekly-digest"), off(category="marketing")], [], {}, CAT, R, 1),
    "same scope: the rule set last wins (on)": (
        [off(category="marketing", at=EARLY), on(category="marketing", at=LATE)], [], {},
        None, None, None),
    "same scope: the rule set last wins (off)": (
        [on(category="marketing", at=EARLY), off(category="marketing", at=LATE)], [], {},
        CAT, R, 1),
    "same scope, same instant: off wins": (
        [on(category="marketing"), off(category="marketing")], [], {}, CAT, R, 1),
    "specific beats recent": (
        [off("email", category="marketing", at=EARLY), on(category="marketing", at=LATE)],
        [], {}, CAT, R, 0),
}  # fmt: skip


@pytest.mark.parametrize(
    ("recipient", "tenant", "overrides", "reason", "owner", "index"),
    TABLE.values(),
    ids=TABLE.keys(),
)
def test_evaluation_order(
    recipient: list[PreferenceRule],
    tenant: list[PreferenceRule],
    overrides: dict[str, str | None],
    reason: PolicyReason | None,
    owner: PreferenceOwner | None,
    index: int | None,
) -> None:
    delivery: dict[str, str | None] = {
        "channel": "email",
        "category": "marketing",
        "workflow": "weekly-digest",
    }
    delivery.update(overrides)
    decision = evaluate_preferences(
        channel=str(delivery["channel"]),
        category=delivery["category"],
        workflow=str(delivery["workflow"]),
        recipient=recipient,
        tenant=tenant,
    )
    rules = recipient + tenant
    assert decision == PreferenceDecision(
        allowed=reason is None,
        reason=reason,
        rule=None if index is None else rules[index],
        owner=owner,
    )


def test_every_reason_is_reachable() -> None:
    reasons = {row[3] for row in TABLE.values()} - {None}
    assert reasons == {CH, CAT, WF}


def test_critical_bypasses_opt_outs_and_says_which() -> None:
    rule = off("email")
    decision = evaluate_preferences(
        channel="email",
        category="security",
        workflow="password-reset",
        critical=True,
        recipient=[rule, off(workflow="password-reset")],
        tenant=[off(category="security")],
    )
    assert decision == PreferenceDecision(
        allowed=True, reason=CH, rule=rule, owner=R, critical_bypass=True
    )


def test_critical_with_nothing_to_bypass_is_a_plain_allow() -> None:
    decision = evaluate_preferences(
        channel="email", category=None, workflow="password-reset", critical=True
    )
    assert decision == PreferenceDecision(allowed=True)


def test_context_is_the_evidence() -> None:
    set_at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    decision = evaluate_preferences(
        channel="email",
        category="marketing",
        workflow="weekly-digest",
        tenant=[off("email", category="marketing", at=set_at)],
    )
    assert decision.context() == {
        "rule": "category_disabled",
        "owner": "tenant",
        "channel": "email",
        "category": "marketing",
        "workflow": None,
        "set_at": "2026-03-01T12:30:00+00:00",
        "critical_bypass": False,
    }
    assert PreferenceDecision(allowed=True).context() == {}


def test_reasons_are_delivery_reasons() -> None:
    # workflow_disabled joins chimeway_delivery_reason with the storage migration.
    assert {str(r) for r in PolicyReason} - {str(r) for r in DeliveryReason} <= {
        "workflow_disabled"
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give a channel, a category or a workflow"),
        ({"category": "a", "workflow": "b"}, "a category or a workflow, not both"),
        ({"channel": ""}, "PreferenceScope.channel: expected a non-empty string"),
        ({"category": 3}, "PreferenceScope.category: expected a non-empty string"),
    ],
)
def test_scope_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        PreferenceScope(**kwargs)  # type: ignore[arg-type]


def test_scope_kind() -> None:
    assert PreferenceScope("email").kind == "channel"
    assert PreferenceScope("email", category="news").kind == "category"
    assert PreferenceScope("email", workflow="digest").kind == "workflow"


def test_rule_validation() -> None:
    with pytest.raises(InvalidArgument, match=r"PreferenceRule\.set_at: must be a timezone-aware"):
        PreferenceRule(PreferenceScope("email"), False, datetime(2026, 1, 1))
    with pytest.raises(InvalidArgument, match=r"PreferenceRule\.enabled: expected a bool"):
        PreferenceRule(PreferenceScope("email"), 0, EARLY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel": ""}, "channel: expected a non-empty string"),
        ({"workflow": None}, "workflow: expected a non-empty string"),
        ({"category": ""}, "category: expected a non-empty string or None"),
    ],
)
def test_delivery_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"channel": "email", "category": None, "workflow": "w"}
    with pytest.raises(InvalidArgument, match=message):
        evaluate_preferences(**(args | kwargs))  # type: ignore[arg-type]
