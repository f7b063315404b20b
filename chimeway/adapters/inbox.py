"""The ``in_app`` channel's default adapter: the inbox is where the notification goes."""

from __future__ import annotations

from chimeway.adapters.settings import check_capacity, check_name
from chimeway.adapters.types import DeliveryRequest, Sent


class InboxAdapter:
    """Sends nothing anywhere: recording the send puts the notification in its recipient's
    in-app inbox (``cw.inbox``, ``GET /v1/inbox``) and wakes the open streams. Chimeway uses
    it for ``in_app`` unless ``adapters={"in_app": ...}`` names another (which then does the
    extra work, e.g. a push to your own socket; the item joins the inbox all the same)."""

    #: Nothing to wait on; the attribute is there for the engine's bulkhead.
    timeout = 1.0

    def __init__(self, *, name: str = "inbox", capacity: int = 16) -> None:
        self.name = check_name("InboxAdapter", name)
        self.capacity = check_capacity("InboxAdapter", capacity)

    def deliver(self, request: DeliveryRequest) -> Sent:
        return Sent(
            provider_message_id=f"inbox-{request.delivery_id}",
            meta={"adapter": "inbox", "provider": self.name},
        )
