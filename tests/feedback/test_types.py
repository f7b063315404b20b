"""The normalised event, its errors, and the registry of providers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chimeway.errors import ChimewayError, ConfigurationError, InvalidArgument
from chimeway.feedback import (
    FeedbackEvent,
    FeedbackKind,
    MailgunProvider,
    PostmarkProvider,
    TwilioProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
    providers_by_name,
)


def test_the_kinds_are_the_designed_ones() -> None:
    assert [kind.value for kind in FeedbackKind] == [
        "delivered",
        "bounced",
        "complained",
        "failed",
        "opened",
        "clicked",
        "unsubscribed",
    ]


def event(occurred_at: datetime | None) -> FeedbackEvent:
    return FeedbackEvent(
        provider="postmark",
        provider_event_id="Bounce:1",
        kind=FeedbackKind.BOUNCED,
        delivery_id=uuid.uuid4(),
        provider_message_id="m-1",
        occurred_at=occurred_at,
        evidence={"bounce_type": "HardBounce"},
        permanent=True,
    )


def test_an_event_time_is_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    assert event(datetime(2025, 5, 1, 14, 0, tzinfo=paris)).occurred_at == datetime(
        2025, 5, 1, 12, 0, tzinfo=UTC
    )
    assert event(datetime(2025, 5, 1, 14, 0, tzinfo=paris)).occurred_at.tzinfo is UTC  # type: ignore[union-attr]
    assert event(None).occurred_at is None


def test_a_naive_event_time_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="occurred_at must be timezone-aware"):
        event(datetime(2025, 5, 1, 12, 0))


def test_events_are_immutable() -> None:
    with pytest.raises(AttributeError):
        event(None).kind = FeedbackKind.DELIVERED  # type: ignore[misc]


@pytest.mark.parametrize("error", [WebhookUnauthorized, WebhookUnparseable])
def test_webhook_errors_belong_to_the_tree_with_a_default_message(
    error: type[ChimewayError],
) -> None:
    assert issubclass(error, ChimewayError)
    assert error().message == (error.__doc__ or "").strip()


def test_providers_are_keyed_by_name() -> None:
    postmark = PostmarkProvider("u", "p")
    marketing = PostmarkProvider("u2", "p2", name="postmark-marketing")
    twilio = TwilioProvider("token")
    assert providers_by_name(postmark, marketing, twilio) == {
        "postmark": postmark,
        "postmark-marketing": marketing,
        "twilio": twilio,
    }
    assert providers_by_name() == {}


def test_two_providers_with_one_name_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="two feedback providers are named 'mailgun'"):
        providers_by_name(MailgunProvider("key-1"), TwilioProvider("t"), MailgunProvider("key-2"))


@pytest.mark.parametrize("name", ["", "Postmark", "post mark", "post/mark", "-x", "x" * 65])
def test_a_name_that_is_not_a_url_segment_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError, match="must be 1-64 lowercase letters"):
        providers_by_name(TwilioProvider("t", name=name))


def test_a_provider_repr_shows_no_secret() -> None:
    text = repr(
        [PostmarkProvider("user", "hunter2"), MailgunProvider("key-abc"), TwilioProvider("tok-xyz")]
    )
    assert "hunter2" not in text
    assert "key-abc" not in text
    assert "tok-xyz" not in text
