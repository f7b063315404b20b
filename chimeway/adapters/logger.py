"""The default adapter: logs that it would send, with ids only, and succeeds."""

from __future__ import annotations

import logging

from chimeway.adapters.settings import check_capacity, check_name
from chimeway.adapters.types import DeliveryRequest, Sent

logger = logging.getLogger(__name__)


class LoggerAdapter:
    """Sends nothing; logs the delivery's ids (never its content) and reports success."""

    #: Logging does not wait on anyone; the attribute is there for the engine's bulkhead.
    timeout = 1.0

    def __init__(self, *, name: str = "logger", capacity: int = 16) -> None:
        self.name = check_name("LoggerAdapter", name)
        self.capacity = check_capacity("LoggerAdapter", capacity)

    def deliver(self, request: DeliveryRequest) -> Sent:
        logger.info(
            "delivered to the log",
            extra={
                "action": "adapter.logged",
                "delivery_id": str(request.delivery_id),
                "tenant_id": request.tenant_id,
                "channel": request.channel,
            },
        )
        return Sent(
            provider_message_id=f"log-{request.delivery_id}",
            meta={"adapter": "logger", "provider": self.name},
        )
