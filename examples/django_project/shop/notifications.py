"""The project's Chimeway, on Django's database, and its one notifier."""

from __future__ import annotations

import functools
from typing import Any

from chimeway import Chimeway, LoggerAdapter, Notifier, Recipient
from chimeway.contrib.django import database_url


class OrderPlaced(Notifier):
    key = "order_placed"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["customer"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"order_id": params["order_id"]}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return ["in_app"]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return {
            "headline": f"Order {params['order_id']} placed",
            "body": "Thank you!",
            "primary_action": {"label": "View", "url": f"/orders/{params['order_id']}"},
        }


@functools.cache
def get_cw() -> Chimeway:
    """The project's Chimeway, built on first use: by then Django knows which database it
    is on (a test run switches to the test database after importing the modules)."""
    return Chimeway(database_url(), notifiers=[OrderPlaced], adapters={"in_app": LoggerAdapter()})
