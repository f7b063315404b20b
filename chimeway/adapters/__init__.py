"""Channel adapters: the one place Chimeway talks to providers.

An adapter is any object with ``deliver(request) -> Sent``. It reports failure by raising
(or returning) :class:`Temporary`, :class:`Permanent` or :class:`Bounced`; any other
exception counts as a temporary failure. Adapters are called outside any transaction and
without a row lock, and receive ``request.idempotency_key`` (the delivery id) to pass to
providers that deduplicate, because a crash between the send and its record can repeat it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from chimeway.adapters.logger import LoggerAdapter
from chimeway.adapters.types import (
    Bounced,
    DeliveryFailure,
    DeliveryRequest,
    Permanent,
    Sent,
    Temporary,
)

__all__ = [
    "Adapter",
    "Bounced",
    "DeliveryFailure",
    "DeliveryRequest",
    "LoggerAdapter",
    "Permanent",
    "Sent",
    "Temporary",
]


@runtime_checkable
class Adapter(Protocol):
    """What Chimeway needs of a channel adapter."""

    def deliver(self, request: DeliveryRequest) -> Sent | DeliveryFailure: ...
