"""chimeway.policy.describe: each decision in one sentence, from its stored evidence."""

from __future__ import annotations

from typing import Any

import pytest

from chimeway.policy import describe
from chimeway.policy.sentences import bypassed, duration

SET_AT = "2026-03-01T12:03:41+00:00"


def opt_out(**context: Any) -> dict[str, Any]:
    base = {"owner": "recipient", "channel": None, "category": None, "workflow": None}
    return {**base, "set_at": SET_AT, "source": "api", **context}


@pytest.mark.parametrize(
    ("reason", "context", "sentence"),
    [
        (
            "category_disabled",
            opt_out(channel="email", category="mentions"),
            "Not sent: ana turned email for 'mentions' off at 2026-03-01 12:03Z.",
        ),
        (
            "channel_disabled",
            opt_out(channel="sms", checkpoint="claim"),
            "Not sent: ana turned sms off at 2026-03-01 12:03Z (checked again when it was about "
            "to be sent).",
        ),
        (
            "category_disabled",
            opt_out(category="marketing"),
            "Not sent: ana turned 'marketing' on every channel off at 2026-03-01 12:03Z.",
        ),
        (
            "workflow_disabled",
            opt_out(workflow="digest"),
            "Not sent: ana turned the 'digest' workflow on every channel off at 2026-03-01 12:03Z.",
        ),
        (
            "workflow_disabled",
            opt_out(channel="email", workflow="digest"),
            "Not sent: ana turned email for the 'digest' workflow off at 2026-03-01 12:03Z.",
        ),
        (
            "channel_disabled",
            opt_out(channel="email", owner="tenant"),
            "Not sent: the tenant's default turns email off (set at 2026-03-01 12:03Z).",
        ),
        (
            "category_disabled",
            opt_out(channel="email", category="news", source="unsubscribed:link"),
            "Not sent: ana unsubscribed from email for 'news' through an unsubscribe link at "
            "2026-03-01 12:03Z.",
        ),
        (
            "category_disabled",
            opt_out(channel="email", category="news", source="unsubscribed:postmark"),
            "Not sent: ana unsubscribed from email for 'news' through postmark at "
            "2026-03-01 12:03Z.",
        ),
        (
            "category_disabled",
            opt_out(channel="email", category="news", source="complained:sendgrid"),
            "Not sent: ana reported email for 'news' as spam to sendgrid at 2026-03-01 12:03Z.",
        ),
        (
            "delivery_cap_reached",
            {
                "max_count": 3,
                "window_seconds": 3600.0,
                "channel": "sms",
                "recent_count": 3,
                "owner": "recipient",
            },
            "Not sent: the cap of 3 deliveries per 1 hour on sms for ana was reached (3 already "
            "in the window).",
        ),
        (
            "delivery_cap_reached",
            {
                "max_count": 10,
                "window_seconds": 86400.0,
                "channel": None,
                "recent_count": 12,
                "owner": "tenant",
                "checkpoint": "claim",
            },
            "Not sent: the tenant's default cap of 10 deliveries per 1 day on all channels for ana "
            "was reached (12 already in the window) (checked again when it was about to be sent).",
        ),
        (
            "quiet_hours",
            {
                "start": "22:00",
                "end": "07:00",
                "timezone": "Europe/Paris",
                "owner": "recipient",
                "until": "2026-06-02T05:00:00+00:00",
            },
            "Held by quiet hours 22:00\N{EN DASH}07:00 Europe/Paris until 2026-06-02 07:00 local "
            "(05:00Z).",
        ),
        (
            "throttled",
            {
                "key": "email",
                "limit": 20,
                "per_seconds": 1.0,
                "until": "2026-06-02T05:00:01.250000+00:00",
            },
            "Held by the email throttle (20 per 1 s, key 'email'): the next free slot is at "
            "05:00:01.250Z.",
        ),
        (
            "no_address",
            {"needs": "email"},
            "Not sent: the email adapter needs the recipient's email, which their profile lacks.",
        ),
    ],
)
def test_sentences(reason: str, context: dict[str, Any], sentence: str) -> None:
    assert describe(reason, context, recipient_id="ana", channel="email") == sentence


def test_a_critical_bypass() -> None:
    assert bypassed(opt_out(channel="email"), recipient_id="ana") == (
        "Sent although ana turned email off at 2026-03-01 12:03Z: the notifier is critical."
    )


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1, "1 s"), (90, "90 s"), (60, "1 minute"), (7200, "2 hours"), (86400, "1 day"), (None, "?")],
)
def test_durations(seconds: object, words: str) -> None:
    assert duration(seconds) == words
