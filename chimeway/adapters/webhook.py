"""Deliveries as signed JSON POSTs to an HTTP endpoint (Standard Webhooks)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

from chimeway.adapters import http_calls
from chimeway.adapters.settings import (
    check_capacity,
    check_name,
    check_text,
    check_timeout,
    check_url,
    is_http_url,
)
from chimeway.adapters.standard_webhooks import decode_secret, signature_header
from chimeway.adapters.types import DeliveryRequest, Permanent, Sent
from chimeway.errors import ConfigurationError

RECIPIENT_URL_KEY = "webhook_url"
#: Headers the adapter sets itself; ``headers`` may not replace them.
OWN_HEADERS = frozenset(
    {"content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key"}
)


class WebhookAdapter:
    """POSTs each delivery as JSON, signed per the Standard Webhooks spec.

    The body is ``{"type": event_type, "data": {"delivery_id", "tenant_id", "recipient_id",
    "channel", "content", "attempt_number"}}``; with ``include_address=True`` ``data`` also
    holds ``"recipient": {"email", "phone"}`` (the addresses the profile has). Headers:
    ``webhook-id`` and ``Idempotency-Key`` (both the delivery's idempotency key, the same on
    every retry), ``webhook-timestamp`` (Unix seconds of this attempt) and
    ``webhook-signature`` (one ``v1,`` signature per secret, so ``secret`` may list an old
    and a new secret while rotating).

    ``url``: where to POST; with ``url_from_recipient=True`` a profile's
    ``data["webhook_url"]`` takes its place for that recipient (``url`` may then be
    ``None``: a recipient without one is a :class:`Permanent` failure).

    2xx is :class:`Sent`; 408, 429 and 5xx are :class:`Temporary` with the ``Retry-After``
    the endpoint gave; other answers (3xx, 4xx) are :class:`Permanent`; timeouts and
    connection errors are :class:`Temporary`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        secret: str | Sequence[str],
        url_from_recipient: bool = False,
        include_address: bool = False,
        event_type: str = "chimeway.delivery",
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
        timeout: float = 15.0,
        capacity: int = 10,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = check_name("WebhookAdapter", name)
        self.timeout = check_timeout("WebhookAdapter", timeout)
        self.capacity = check_capacity("WebhookAdapter", capacity)
        if url is None and not url_from_recipient:
            raise ConfigurationError(
                "WebhookAdapter url is required unless url_from_recipient=True"
            )
        self.url = None if url is None else check_url("WebhookAdapter", "url", url)
        secrets = [secret] if isinstance(secret, str) else list(secret)
        if not secrets:
            raise ConfigurationError("WebhookAdapter secret must name at least one secret")
        self._keys = [decode_secret(s) for s in secrets]
        self.url_from_recipient = url_from_recipient
        self.include_address = include_address
        self.event_type = check_text("WebhookAdapter", "event_type", event_type)
        self._headers = dict(headers or {})
        taken = sorted(name for name in self._headers if name.lower() in OWN_HEADERS)
        if taken:
            raise ConfigurationError(
                f"WebhookAdapter headers may not set {', '.join(taken)}: the adapter sets them"
            )
        self._http = http_calls.HttpClient(
            provider=self.name, timeout=self.timeout, capacity=self.capacity, verify=verify
        )

    def deliver(self, request: DeliveryRequest) -> Sent:
        meta: dict[str, Any] = {"provider": self.name}
        url = self._url_for(request, meta)
        body = self._body(request, meta)
        msg_id = request.idempotency_key
        timestamp = int(time.time())
        response = self._http.post(
            url,
            content=body,
            headers={
                **self._headers,
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(self._keys, msg_id, timestamp, body),
                "Idempotency-Key": msg_id,
            },
        )
        if response.is_success:
            return Sent(meta={**meta, "status_code": response.status_code})
        raise http_calls.status_failure(
            response, f"{self.name}: endpoint answered HTTP {response.status_code}", meta
        )

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self._http.close()

    def _url_for(self, request: DeliveryRequest, meta: dict[str, Any]) -> str:
        if self.url_from_recipient and request.recipient is not None:
            own = request.recipient.data.get(RECIPIENT_URL_KEY)
            if own is not None:
                if not isinstance(own, str) or not is_http_url(own):
                    raise Permanent(
                        f"{self.name}: recipient data {RECIPIENT_URL_KEY!r} is not an "
                        "absolute http(s) URL",
                        meta=meta,
                    )
                return own
        if self.url is None:
            raise Permanent(
                f"{self.name}: the recipient has no {RECIPIENT_URL_KEY!r} in their data",
                meta=meta,
            )
        return self.url

    def _body(self, request: DeliveryRequest, meta: dict[str, Any]) -> bytes:
        data: dict[str, Any] = {
            "delivery_id": str(request.delivery_id),
            "tenant_id": request.tenant_id,
            "recipient_id": request.recipient_id,
            "channel": request.channel,
            "content": request.content,
            "attempt_number": request.attempt_number,
        }
        if self.include_address and request.recipient is not None:
            profile = request.recipient
            data["recipient"] = {
                key: value
                for key, value in (("email", profile.email), ("phone", profile.phone))
                if value is not None
            }
        try:
            text = json.dumps(
                {"type": self.event_type, "data": data},
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            )
        except (TypeError, ValueError) as exc:
            raise Permanent(
                f"{self.name}: the content is not JSON-serializable", meta=meta
            ) from exc
        return text.encode("utf-8")
