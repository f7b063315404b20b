"""Signed provider webhooks for the feedback tests: Standard Webhooks receipts, signed by the
reference ``standardwebhooks`` library (an independent implementation of the scheme)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import standardwebhooks

from chimeway import Chimeway, OnOutcome, Step, WaitUntil, Workflow
from chimeway.feedback import StandardWebhooksProvider
from tests.integration.notifiers import WithWorkflow

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PROVIDER = StandardWebhooksProvider(SECRET, name="receipts")

#: Email, then (unless the email bounces later) nothing for an hour; a bounce goes to SMS.
BOUNCE_TO_SMS = Workflow(
    key="bounce_to_sms",
    version=1,
    steps=[
        Step(
            "email",
            channel="email",
            progress=[
                OnOutcome(outcome="bounced", to_step="sms"),
                WaitUntil(delay=3600, to_step="sms"),
            ],
        ),
        Step("sms", channel="sms"),
    ],
)


def receipt(
    kind: str,
    delivery_id: uuid.UUID | None = None,
    *,
    message_id: str | None = None,
    event_id: str | None = None,
    **data: Any,
) -> tuple[bytes, dict[str, str]]:
    """A signed receipt ``message.<kind>`` about a delivery: (body, headers)."""
    body = json.dumps(
        {
            "type": f"message.{kind}",
            "timestamp": "2025-05-01T12:00:00Z",
            "data": {
                **({"delivery_id": str(delivery_id)} if delivery_id else {}),
                **({"provider_message_id": message_id} if message_id else {}),
                **data,
            },
        }
    )
    return body.encode(), signed(body.encode(), event_id)


def signed(body: bytes, event_id: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers signing ``body`` (whatever it holds) now."""
    msg_id = event_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(SECRET).sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }


def bounce_flow(cw: Chimeway) -> WithWorkflow:
    notifier = WithWorkflow(BOUNCE_TO_SMS)
    cw.register_notifier(notifier)
    return notifier
