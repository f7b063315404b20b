"""Two tenants' runs and deliveries for the dashboard tests (HTTP and browser)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from chimeway import (
    Chimeway,
    DeliveryRequest,
    OnOutcome,
    Permanent,
    Recipient,
    Sent,
    Step,
    Triggered,
    Workflow,
)
from chimeway.testing import RecordingAdapter, drain
from tests.integration.notifiers import WithWorkflow

ACME = "acme"
GLOBEX = "globex"
#: Operator tokens: one per tenant, and one that reads any tenant.
ACME_TOKEN = "acme-operator-token-0123456789abcdef"
GLOBEX_TOKEN = "globex-operator-token-0123456789abcdef"
ADMIN_TOKEN = "admin-operator-token-0123456789abcdef"
TOKENS = [f"{ACME}:{ACME_TOKEN}", f"{GLOBEX}:{GLOBEX_TOKEN}", ADMIN_TOKEN]
#: A recipient id that would run as script if it were not escaped.
HOSTILE = '<script>alert("x")</script>'
ORDER = "order-secret-991"

FLOW = Workflow(
    key="dash.flow",
    version=1,
    steps=[
        Step("email", channel="email", progress=[OnOutcome(outcome="delivered", to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


class Orders(WithWorkflow):
    key = "dash.orders"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": uid, "email": f"{uid}@example.test"} for uid in params["users"]]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        text = f"About {params['order']}"
        if channel == "email":
            return {"subject": text, "html_body": f"<p>{text}</p>", "text_body": text}
        return {"text_body": text}


class RefusesBob(RecordingAdapter):
    """Refuses acme-bob's email for good; sends the others."""

    def deliver(self, request: DeliveryRequest) -> Sent:
        if request.recipient_id == "acme-bob":
            raise Permanent("mailbox unknown")
        return super().deliver(request)


@dataclass(frozen=True)
class Seeded:
    acme: Triggered
    globex: Triggered


def seed(cw: Chimeway) -> Seeded:
    """acme: ana (both steps sent), bob (email refused for good: give the Chimeway
    ``adapters={"email": RefusesBob()}``); globex: gus and the hostile id. Everything
    committed and sent."""
    acme = cw.trigger(
        Orders(FLOW),
        {"users": ["acme-ana", "acme-bob"], "order": ORDER},
        tenant_id=ACME,
        idempotency_key=str(uuid.uuid4()),
    )
    globex = cw.trigger(
        Orders(FLOW),
        {"users": ["globex-gus", HOSTILE], "order": ORDER},
        tenant_id=GLOBEX,
        idempotency_key=str(uuid.uuid4()),
    )
    assert isinstance(acme, Triggered) and isinstance(globex, Triggered)
    drain(cw)
    return Seeded(acme, globex)
