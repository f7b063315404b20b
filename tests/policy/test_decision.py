"""chimeway.policy.decide: the order of the checks, each verdict and its evidence."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from chimeway.errors import InvalidArgument
from chimeway.policy import (
    CapCount,
    CapRule,
    DeliveryFacts,
    PreferenceRule,
    PreferenceScope,
    QuietHours,
    RecipientPolicy,
    decide,
)

NOW = datetime(2026, 6, 1, 21, 30, tzinfo=UTC)  # 23:30 in Paris
SET = datetime(2026, 5, 1, 12, 3, tzinfo=UTC)
FACTS = DeliveryFacts(channel="email", workflow="digest", category="news")


def rule(enabled: bool = False, source: str = "api", **scope: str) -> PreferenceRule:
    return PreferenceRule(PreferenceScope(**scope), enabled, SET, source)


CHANNEL_OFF = rule(channel="email")
CATEGORY_OFF = rule(category="news")
WORKFLOW_OFF = rule(workflow="digest")
CAP = CapCount(CapRule(3, timedelta(hours=1)), recent_count=3)
QUIET = QuietHours(time(22), time(7), "Europe/Paris")


@pytest.mark.parametrize(
    ("policy", "lacking", "expected"),
    [
        (RecipientPolicy(), None, ("send", None)),
        (RecipientPolicy((CHANNEL_OFF,)), None, ("suppress", "channel_disabled")),
        (RecipientPolicy((CATEGORY_OFF,)), None, ("suppress", "category_disabled")),
        (RecipientPolicy((WORKFLOW_OFF,)), None, ("suppress", "workflow_disabled")),
        (RecipientPolicy(), "email", ("suppress", "no_address")),
        (RecipientPolicy(caps=(CAP,)), None, ("suppress", "delivery_cap_reached")),
        (RecipientPolicy(quiet_hours=QUIET), None, ("defer", "quiet_hours")),
        # The first check that stops the delivery decides.
        (
            RecipientPolicy((WORKFLOW_OFF, CATEGORY_OFF, CHANNEL_OFF)),
            "email",
            ("suppress", "channel_disabled"),
        ),
        (RecipientPolicy((WORKFLOW_OFF, CATEGORY_OFF)), None, ("suppress", "category_disabled")),
        (RecipientPolicy((WORKFLOW_OFF,)), "email", ("suppress", "workflow_disabled")),
        (RecipientPolicy(caps=(CAP,)), "email", ("suppress", "no_address")),
        (
            RecipientPolicy(caps=(CAP,), quiet_hours=QUIET),
            None,
            ("suppress", "delivery_cap_reached"),
        ),
        # A tenant default applies where the recipient has no rule of that kind.
        (RecipientPolicy(tenant_rules=(CHANNEL_OFF,)), None, ("suppress", "channel_disabled")),
        (RecipientPolicy((rule(True, channel="email"),), (CHANNEL_OFF,)), None, ("send", None)),
        # A cap below its limit, or on another channel, lets it through.
        (
            RecipientPolicy(caps=(CapCount(CapRule(3, timedelta(hours=1)), 2),)),
            None,
            ("send", None),
        ),
        (
            RecipientPolicy(caps=(CapCount(CapRule(1, timedelta(hours=1), "sms"), 5),)),
            None,
            ("send", None),
        ),
    ],
)
def test_the_order_and_every_verdict(
    policy: RecipientPolicy, lacking: str | None, expected: tuple[str, str | None]
) -> None:
    verdict = decide(FACTS, policy, now=NOW, checkpoint="planning", lacking_address=lacking)
    assert (verdict.action, verdict.reason) == expected


def test_an_opt_out_carries_its_rule_owner_source_and_checkpoint() -> None:
    policy = RecipientPolicy((rule(source="unsubscribed:link", channel="email", category="news"),))
    verdict = decide(FACTS, policy, now=NOW, checkpoint="claim")
    assert verdict.context == {
        "rule": "category_disabled",
        "owner": "recipient",
        "channel": "email",
        "category": "news",
        "workflow": None,
        "set_at": SET.isoformat(),
        "critical_bypass": False,
        "checkpoint": "claim",
        "source": "unsubscribed:link",
    }


def test_quiet_hours_hold_until_the_windows_end_with_its_evidence() -> None:
    verdict = decide(FACTS, RecipientPolicy(quiet_hours=QUIET), now=NOW, checkpoint="planning")
    assert verdict.until == datetime(2026, 6, 2, 5, 0, tzinfo=UTC)
    assert verdict.context == {
        "rule": "quiet_hours",
        "start": "22:00",
        "end": "07:00",
        "timezone": "Europe/Paris",
        "owner": "recipient",
        "until": "2026-06-02T05:00:00+00:00",
        "checkpoint": "planning",
    }


def test_a_cap_carries_its_count_and_owner() -> None:
    tenant_cap = CapCount(CapRule(2, timedelta(days=1), "email"), 2, owner="tenant")
    verdict = decide(FACTS, RecipientPolicy(caps=(tenant_cap,)), now=NOW, checkpoint="claim")
    assert verdict.context == {
        "rule": "delivery_cap_reached",
        "max_count": 2,
        "window_seconds": 86400.0,
        "channel": "email",
        "recent_count": 2,
        "owner": "tenant",
        "checkpoint": "claim",
    }


def test_critical_passes_opt_outs_and_caps_but_not_quiet_hours() -> None:
    critical = DeliveryFacts("email", "reset", "security", critical=True)
    everything = RecipientPolicy((CHANNEL_OFF,), caps=(CAP,), quiet_hours=QUIET)
    held = decide(critical, everything, now=NOW, checkpoint="planning")
    assert held.action == "defer"
    assert held.context["critical_bypass"]["rule"] == "channel_disabled"
    sent = decide(
        critical, RecipientPolicy((CHANNEL_OFF,), caps=(CAP,)), now=NOW, checkpoint="planning"
    )
    assert sent.action == "send"
    assert sent.context["critical_bypass"]["critical_bypass"] is True
    bypassing = DeliveryFacts("email", "code", critical=True, bypass_quiet_hours=True)
    assert decide(bypassing, everything, now=NOW, checkpoint="planning").action == "send"
    # Bypassing quiet hours alone is not bypassing opt-outs.
    quiet_only = DeliveryFacts("email", "code", bypass_quiet_hours=True)
    assert decide(quiet_only, everything, now=NOW, checkpoint="planning").action == "suppress"


def test_a_missing_address_stops_even_a_critical_notifier() -> None:
    critical = DeliveryFacts("email", "reset", critical=True)
    verdict = decide(
        critical, RecipientPolicy(), now=NOW, checkpoint="planning", lacking_address="email"
    )
    assert (verdict.action, verdict.reason, verdict.context) == (
        "suppress",
        "no_address",
        {"needs": "email"},
    )


def test_now_must_be_aware() -> None:
    with pytest.raises(InvalidArgument, match="now: must be a timezone-aware datetime"):
        decide(FACTS, RecipientPolicy(), now=datetime(2026, 1, 1), checkpoint="planning")
