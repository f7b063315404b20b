"""What adapters receive and return."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from chimeway.types import ErrorClass


@dataclass(frozen=True)
class DeliveryRequest:
    """One send: the rendered content for one recipient on one channel."""

    delivery_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    content: dict[str, Any]
    attempt_number: int

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of this delivery: give it to providers that deduplicate."""
        return str(self.delivery_id)


@dataclass(frozen=True)
class Sent:
    """The provider accepted the message."""

    provider_message_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class DeliveryFailure(Exception):
    """The provider did not accept the message."""

    error_class: ErrorClass = ErrorClass.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        provider_message_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or type(self).__name__)
        self.provider_message_id = provider_message_id
        self.meta = meta or {}


class Temporary(DeliveryFailure):
    """Worth retrying: timeouts, rate limits, 5xx."""

    error_class = ErrorClass.TEMPORARY


class Permanent(DeliveryFailure):
    """Will never succeed: invalid address, rejected content."""

    error_class = ErrorClass.PERMANENT


class Bounced(DeliveryFailure):
    """The provider took it, the recipient's server refused it."""

    error_class = ErrorClass.BOUNCED
