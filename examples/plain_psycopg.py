"""A notifier with a two-step workflow, triggered, worked off in this process, and explained.

The workflow shows an in-app notice; if it is not read within an hour, an email follows.
Here the user reads it, so the wait ends early and the run completes without the email.

    CHIMEWAY_DATABASE_URL=postgresql://... python examples/plain_psycopg.py

The database must be migrated (``chimeway migrate``). Jobs are run with
``chimeway.testing.drain`` so that the example needs no worker; in production a
``chimeway worker`` runs them.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import timedelta
from typing import Any

from chimeway import (
    Chimeway,
    LoggerAdapter,
    Notifier,
    Recipient,
    Step,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.testing import drain

READ = "chimeway.notification.read"

ESCALATION = Workflow(
    key="mention_escalation",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[WaitUntil(delay=timedelta(hours=1), to_step="email", cancel_signals=[READ])],
        ),
        Step("email", channel="email"),
    ],
)


class MentionEscalation(Notifier):
    key = "mention_escalation"
    version = 1
    category = "mentions"

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["user_id"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"mentioned_by": params["mentioned_by"], "url": params["url"]}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        line = f"{params['mentioned_by']} mentioned you"
        if channel == "email":
            return {"subject": line, "html_body": f"<p>{line}</p>", "text_body": line}
        return {
            "headline": line,
            "body": "Open the thread to reply.",
            "primary_action": {"label": "Open", "url": params["url"]},
        }

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return ESCALATION


def main() -> int:
    url = os.environ.get("CHIMEWAY_DATABASE_URL")
    if not url:
        print("set CHIMEWAY_DATABASE_URL to a migrated database", file=sys.stderr)
        return 2
    # The in-app channel is logged (LoggerAdapter sends nothing); a real app passes one adapter
    # per channel, e.g. {"email": SmtpAdapter(...)}.
    adapters = {"in_app": LoggerAdapter()}
    with Chimeway(url, notifiers=[MentionEscalation], adapters=adapters) as cw:
        result = cw.trigger(
            MentionEscalation,
            {"user_id": "ada", "mentioned_by": "grace", "url": "/threads/7"},
            tenant_id="acme",
            idempotency_key=f"mention-{uuid.uuid4()}",  # e.g. the id of the mention
        )
        assert isinstance(result, Triggered)
        run_id, notice_id = result.run_ids[0], result.delivery_ids[0]
        print(f"triggered: event {result.event_id}, run {run_id}")

        drain(cw)  # sends the in-app notice; recording it starts the one-hour wait
        run = cw.workflows.explain("acme", run_id)
        print(f"run: {run.state} at step {run.current_step_name!r} ({run.status_reason})")
        print(f"  until {run.suspended_until:%H:%M:%S %Z} or a signal: {run.pending_signals}")

        cw.track_signal("acme", "ada", READ, idempotency_key=f"read-{notice_id}")
        drain(cw)  # routes the signal: the wait is cancelled and the run completes
        run = cw.workflows.explain("acme", run_id)
        print(f"run: {run.state} ({run.terminal_reason})")
        reasons = [t.reason for t in cw.workflows.list_traces("acme", run_id)]
        print(f"  transitions: {', '.join(reasons)}")

        delivery = cw.explain_delivery("acme", notice_id)
        print(f"delivery: {delivery.channel} {delivery.status}: {delivery.why}")
        for entry in delivery.timeline:
            print(f"  {entry.at:%H:%M:%S.%f} {entry.event}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
