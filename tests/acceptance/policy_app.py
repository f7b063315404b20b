"""The application of the policy acceptance tests (real ``chimeway worker`` processes):
emails to the recipients given, through a throttle of ``$THROTTLE`` sends per second."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from chimeway import Chimeway, LoggerAdapter, Notifier, Recipient, RetryPolicy, Throttle

EMAIL = {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"}


class News(Notifier):
    key = "news"
    version = 1
    category = "news"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": user} for user in params["users"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"user": recipient.id}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return ["email"]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return EMAIL


def build() -> Chimeway:
    limit = os.environ.get("THROTTLE")
    return Chimeway(
        os.environ["CHIMEWAY_DATABASE_URL"],
        notifiers=[News],
        adapters={"email": LoggerAdapter()},
        default_retry=RetryPolicy(base_delay=dt.timedelta(0), jitter=0),
        delivery_batch_size=int(os.environ.get("BATCH_SIZE", "50")),
        throttles={"email": Throttle(int(limit))} if limit else None,
    )
