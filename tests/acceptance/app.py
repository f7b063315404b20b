"""The application the acceptance tests run under real ``chimeway worker`` processes.

Configured from the environment so each test can point it at its own database and tune it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from chimeway import (
    Chimeway,
    DeliveryRequest,
    LoggerAdapter,
    Maintenance,
    Notifier,
    OnOutcome,
    OnSignal,
    Recipient,
    RetryPolicy,
    Sent,
    Step,
    WaitUntil,
    Workflow,
)
from chimeway.feedback import StandardWebhooksProvider

#: The Standard Webhooks secret its receipts are signed with (`chimeway serve` tests).
RECEIPTS_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
READ = "chimeway.notification.read"
CLICKED = "app.clicked"

ESCALATION = Workflow(
    key="escalation",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[
                WaitUntil(
                    delay=int(os.environ.get("WAIT_SECONDS", "1")),
                    to_step="email",
                    cancel_signals=[READ],
                ),
                OnSignal(event=CLICKED, to_step="sms"),
            ],
        ),
        Step("email", channel="email", progress=[OnOutcome(outcome="delivered", to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


class Escalation(Notifier):
    key = "escalation"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": user} for user in params["users"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"user": recipient.id}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return {
            "in_app": {
                "headline": "Mentioned",
                "body": "You were mentioned",
                "primary_action": {"label": "Open", "url": "/m"},
            },
            "email": {"subject": "Mentioned", "html_body": "<p>Hi</p>", "text_body": "Hi"},
            "sms": {"text_body": "Mentioned"},
        }[channel]

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return ESCALATION


class BlockingAdapter:
    """Blocks on its first call while ``$BLOCK_DIR/block`` exists, after writing
    ``$BLOCK_DIR/started``: lets a test kill a worker in the middle of a send."""

    def deliver(self, request: DeliveryRequest) -> Sent:
        folder = os.environ.get("BLOCK_DIR")
        if folder and (Path(folder) / "block").exists():
            (Path(folder) / "started").write_text(str(request.delivery_id))
            time.sleep(600)
        return Sent(provider_message_id=f"sent-{request.delivery_id}")


def record_where(cw: Chimeway) -> None:
    """Task ``t.where(seq)``: writes which network namespace ran it (table ``t_where``, made
    by the test), after 50 ms, so several workers share a burst."""

    @cw.procrastinate.task(name="t.where", queue="t")
    def where(seq: int) -> None:
        time.sleep(0.05)
        with cw.pool.connection() as conn:
            conn.execute(
                "INSERT INTO t_where (seq, netns) VALUES (%s, %s)",
                [seq, os.readlink("/proc/self/ns/net")],
            )


def build() -> Chimeway:
    # Every second: tests don't wait a minute for maintenance (unless they need quiet).
    tick = os.environ.get("MAINTENANCE_CRON", "* * * * * *")
    cw = Chimeway(
        os.environ["CHIMEWAY_DATABASE_URL"],
        notifiers=[Escalation],
        adapters={"in_app": BlockingAdapter(), "email": LoggerAdapter(), "sms": LoggerAdapter()},
        webhook_providers=[StandardWebhooksProvider(RECEIPTS_SECRET, name="receipts")],
        default_retry=RetryPolicy(base_delay=dt.timedelta(0), jitter=0),
        stuck_after=dt.timedelta(seconds=float(os.environ.get("STUCK_AFTER", "300"))),
        maintenance=Maintenance(
            sweep_cron=tick,
            stalled_cron=tick,
            stalled_after=dt.timedelta(seconds=3),
            redrive_after=dt.timedelta(seconds=30),
        ),
    )
    record_where(cw)
    return cw
