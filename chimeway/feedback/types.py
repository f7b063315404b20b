"""What a provider webhook says about a message, once verified and normalised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from chimeway.errors import InvalidArgument

# The key under which a send echoes our delivery id to providers that carry custom values
# back in their webhooks (SendGrid custom args, Mailgun user variables, Postmark metadata).
DELIVERY_ID_KEY = "chimeway_delivery_id"


class FeedbackKind(StrEnum):
    """What happened to a message after it was handed to the provider."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class FeedbackEvent:
    """One normalised provider event.

    ``delivery_id`` is set when the provider echoed ours back; otherwise the delivery is found
    by ``provider_message_id`` (the id the provider gave when the message was sent).
    ``provider_event_id`` is stable across the provider's retries, so a duplicate is inert.
    ``evidence`` holds safe facts only (provider status, bounce type, SMTP or error code):
    never an address, a phone number, an IP, a user agent, a clicked URL or message content.
    ``permanent`` says, for ``bounced`` and ``failed``, whether sending again can help.
    """

    provider: str
    provider_event_id: str | None
    kind: FeedbackKind
    delivery_id: uuid.UUID | None
    provider_message_id: str | None
    occurred_at: datetime | None
    evidence: dict[str, Any] = field(default_factory=dict)
    permanent: bool | None = None

    def __post_init__(self) -> None:
        if self.occurred_at is not None:
            if self.occurred_at.utcoffset() is None:
                raise InvalidArgument("occurred_at must be timezone-aware")
            object.__setattr__(self, "occurred_at", self.occurred_at.astimezone(UTC))
