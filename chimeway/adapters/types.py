"""What adapters receive and return."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from chimeway.errors import InvalidArgument
from chimeway.types import ErrorClass


@dataclass(frozen=True)
class RecipientProfile:
    """Who a delivery goes to, as the recipient directory knows them at send time.

    Addresses are personal data: adapters use them to reach the person and never log them
    or put them in an error message. ``data`` is read-only (a copy of what was given).
    """

    id: str
    # Kept out of repr: a stray log line of a request shows no address.
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    locale: str | None = None
    timezone: str | None = None
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise InvalidArgument(f"recipient id must be a non-blank string, got {self.id!r}")
        if not isinstance(self.data, Mapping):
            raise InvalidArgument(
                f"recipient data must be a mapping, got {type(self.data).__name__}"
            )
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))


@dataclass(frozen=True)
class DeliveryRequest:
    """One send: the rendered content for one recipient on one channel.

    ``recipient`` is the recipient's profile (addresses, locale, provider data), filled in by
    the engine at send time; ``unsubscribe_url`` is the one-click unsubscribe link for this
    delivery, when policy gives one.
    """

    delivery_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    content: dict[str, Any]
    attempt_number: int
    recipient: RecipientProfile | None = None
    unsubscribe_url: str | None = None

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
    """The provider did not accept the message.

    ``retry_after``: seconds the provider asked us to wait before trying again (an HTTP
    ``Retry-After``), when it said so. The message and ``meta`` are stored: keep addresses
    and content out of both.
    """

    error_class: ErrorClass = ErrorClass.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        provider_message_id: str | None = None,
        meta: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or type(self).__name__)
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or not math.isfinite(retry_after)
            or retry_after < 0
        ):
            raise InvalidArgument(
                f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}"
            )
        self.provider_message_id = provider_message_id
        self.meta = meta or {}
        self.retry_after = None if retry_after is None else float(retry_after)


class Temporary(DeliveryFailure):
    """Worth retrying: timeouts, rate limits, 5xx."""

    error_class = ErrorClass.TEMPORARY


class Permanent(DeliveryFailure):
    """Will never succeed: invalid address, rejected content."""

    error_class = ErrorClass.PERMANENT


class Bounced(DeliveryFailure):
    """The address does not work: the recipient's server refused it, or the provider knows
    it cannot be reached (unknown mailbox, invalid phone number)."""

    error_class = ErrorClass.BOUNCED
