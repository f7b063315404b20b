"""Channel adapters: the one place Chimeway talks to providers.

An adapter is any object with ``deliver(request) -> Sent``. It reports failure by raising
(or returning) :class:`Temporary`, :class:`Permanent` or :class:`Bounced`; any other
exception counts as a temporary failure. Adapters are called outside any transaction and
without a row lock, and receive ``request.idempotency_key`` (the delivery id) to pass to
providers that deduplicate, because a crash between the send and its record can repeat it.

An adapter that sends to an address of the recipient's profile says which with an
``address`` attribute (``"email"`` or ``"phone"``): planning then suppresses a delivery whose
recipient has none (``no_address``) instead of sending it to fail.

The built-in adapters also have a ``name`` (recorded as ``meta["provider"]`` in every
answer), a ``timeout`` (seconds one call may wait on the provider) and a ``capacity`` (how
many sends may run at once: the engine gives each adapter a bulkhead of that size, so a hung
provider holds no more than its own channel's send threads): :class:`ProviderAdapter`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from chimeway.adapters.fallback import FallbackAdapter
from chimeway.adapters.inbox import InboxAdapter
from chimeway.adapters.logger import LoggerAdapter
from chimeway.adapters.slack import SlackAdapter
from chimeway.adapters.smtp import SmtpAdapter
from chimeway.adapters.twilio import TwilioSmsAdapter
from chimeway.adapters.types import (
    Bounced,
    DeliveryFailure,
    DeliveryRequest,
    Permanent,
    RecipientProfile,
    Sent,
    Temporary,
)
from chimeway.adapters.webhook import WebhookAdapter

__all__ = [
    "Adapter",
    "Bounced",
    "DeliveryFailure",
    "DeliveryRequest",
    "FallbackAdapter",
    "InboxAdapter",
    "LoggerAdapter",
    "Permanent",
    "ProviderAdapter",
    "RecipientProfile",
    "Sent",
    "SlackAdapter",
    "SmtpAdapter",
    "Temporary",
    "TwilioSmsAdapter",
    "WebhookAdapter",
]


@runtime_checkable
class Adapter(Protocol):
    """What Chimeway needs of a channel adapter."""

    def deliver(self, request: DeliveryRequest) -> Sent | DeliveryFailure: ...


@runtime_checkable
class ProviderAdapter(Adapter, Protocol):
    """An adapter that says which provider it is and how much of it may be used at once."""

    name: str
    timeout: float
    capacity: int
