"""The custom provider in docs/receiving-webhooks.md works as the page says."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chimeway.feedback import (
    FeedbackKind,
    FeedbackProvider,
    WebhookUnauthorized,
    WebhookUnparseable,
    providers_by_name,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "receiving-webhooks.md"
BLOCK = re.compile(r"^```python\n(# acme_provider\.py\n.*?)^```", re.MULTILINE | re.DOTALL)
SECRET = "acme-shared-secret"
DELIVERY_ID = uuid.UUID("3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b")


@pytest.fixture(scope="module")
def acme() -> FeedbackProvider:
    [source] = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "acme_provider"}
    exec(compile(source, "acme_provider.py", "exec"), namespace)
    provider: FeedbackProvider = namespace["AcmeProvider"](SECRET)
    return provider


def callback(status: str) -> bytes:
    return json.dumps(
        {
            "id": 991,
            "message_id": "acme-m-1",
            "reference": str(DELIVERY_ID),
            "status": status,
            "time": 1746100000,
            "to": "+15558675310",
        }
    ).encode()


def signed(body: bytes) -> dict[str, str]:
    return {"x-acme-signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


def test_the_example_verifies_and_parses_a_signed_callback(acme: FeedbackProvider) -> None:
    body = callback("rejected")
    acme.verify(body, signed(body))
    [event] = acme.parse(body, signed(body))
    assert event.provider == "acme"
    assert event.provider_event_id == "991"
    assert (event.kind, event.permanent) == (FeedbackKind.BOUNCED, True)
    assert event.delivery_id == DELIVERY_ID
    assert event.provider_message_id == "acme-m-1"
    assert event.occurred_at == datetime.fromtimestamp(1746100000, UTC)
    assert "+1555" not in repr(event)


def test_the_example_refuses_a_forged_callback(acme: FeedbackProvider) -> None:
    with pytest.raises(WebhookUnauthorized):
        acme.verify(callback("delivered"), signed(callback("rejected")))
    with pytest.raises(WebhookUnauthorized):
        acme.verify(callback("delivered"), {})


def test_the_example_leaves_non_outcomes_out_and_refuses_other_bodies(
    acme: FeedbackProvider,
) -> None:
    assert acme.parse(callback("queued"), {}) == []
    with pytest.raises(WebhookUnparseable):
        acme.parse(b"[1, 2]", {})


def test_the_example_registers_like_the_built_in_providers(acme: FeedbackProvider) -> None:
    assert providers_by_name(acme) == {"acme": acme}
