"""Chat deliveries to Slack: an incoming webhook, or ``chat.postMessage`` with a bot token."""

from __future__ import annotations

import re
import ssl
from typing import Any

import httpx
from pydantic import ValidationError

from chimeway.adapters import http_calls
from chimeway.adapters.settings import (
    check_capacity,
    check_name,
    check_text,
    check_timeout,
    check_url,
)
from chimeway.adapters.types import DeliveryFailure, DeliveryRequest, Permanent, Sent, Temporary
from chimeway.content import ChatContent, describe_validation_error
from chimeway.errors import ConfigurationError

RECIPIENT_CHANNEL_KEY = "slack_channel"
#: ``ok: false`` errors of ``chat.postMessage`` that are worth retrying; any other is not.
TEMPORARY_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,80}")


class SlackAdapter:
    """Posts the chat content (``text``; ``rich_payload["blocks"]`` when present) to Slack.

    Two modes, chosen by what is given:

    * ``webhook_url``: an incoming webhook (the channel is the webhook's). HTTP 2xx is
      :class:`Sent` with no message id; 429 and 5xx are :class:`Temporary` (with
      ``Retry-After``); other answers are :class:`Permanent`, with Slack's error code
      (``channel_not_found``, ``channel_is_archived``, ``invalid_payload``...) in
      ``meta["slack_error"]``.
    * ``token`` (a bot token): ``chat.postMessage`` at ``{base_url}/chat.postMessage``, to the
      recipient's ``data["slack_channel"]`` when their profile has one, else to ``channel``.
      ``ok: true`` is :class:`Sent` with the message ``ts`` as its id; ``ok: false`` with a
      rate-limit or server-side error (:data:`TEMPORARY_ERRORS`) is :class:`Temporary`, any
      other (``channel_not_found``, ``invalid_auth``, ``not_in_channel``...) is
      :class:`Permanent`; HTTP 429 and 5xx are :class:`Temporary`. The message carries
      ``metadata`` of type ``chimeway_delivery`` with the delivery id, so a repeat can be
      recognised in the channel.

    Timeouts and connection errors are :class:`Temporary`.
    """

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        token: str | None = None,
        channel: str | None = None,
        base_url: str = "https://slack.com/api",
        name: str = "slack",
        timeout: float = 10.0,
        capacity: int = 10,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = check_name("SlackAdapter", name)
        self.timeout = check_timeout("SlackAdapter", timeout)
        self.capacity = check_capacity("SlackAdapter", capacity)
        if (webhook_url is None) == (token is None):
            raise ConfigurationError("SlackAdapter needs exactly one of webhook_url or token")
        if webhook_url is not None and channel is not None:
            raise ConfigurationError(
                "SlackAdapter channel applies to token mode only; an incoming webhook posts "
                "to its own channel"
            )
        self.webhook_url = (
            None if webhook_url is None else check_url("SlackAdapter", "webhook_url", webhook_url)
        )
        self._token = None if token is None else check_text("SlackAdapter", "token", token)
        self.channel = None if channel is None else check_text("SlackAdapter", "channel", channel)
        self.base_url = check_url("SlackAdapter", "base_url", base_url).rstrip("/")
        self._http = http_calls.HttpClient(
            provider=self.name, timeout=self.timeout, capacity=self.capacity, verify=verify
        )

    def deliver(self, request: DeliveryRequest) -> Sent:
        meta: dict[str, Any] = {"provider": self.name}
        message = self._message(request, meta)
        if self.webhook_url is not None:
            return self._post_webhook(self.webhook_url, message, meta)
        return self._post_message(request, message, meta)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self._http.close()

    def _message(self, request: DeliveryRequest, meta: dict[str, Any]) -> dict[str, Any]:
        try:
            content = ChatContent.model_validate(request.content)
        except ValidationError as exc:
            raise Permanent(
                f"{self.name}: chat content is invalid: {describe_validation_error(exc)}",
                meta=meta,
            ) from exc
        message: dict[str, Any] = {"text": content.text}
        blocks = (content.rich_payload or {}).get("blocks")
        if blocks is not None:
            message["blocks"] = blocks
        return message

    def _post_webhook(self, url: str, message: dict[str, Any], meta: dict[str, Any]) -> Sent:
        response = self._http.post(url, json=message)
        if response.is_success:
            return Sent(meta=meta)
        error = _error_code(response.text)
        if error is not None:
            meta = {**meta, "slack_error": error}
        raise http_calls.status_failure(
            response,
            f"{self.name}: incoming webhook answered HTTP {response.status_code}"
            + (f" ({error})" if error else ""),
            meta,
        )

    def _post_message(
        self, request: DeliveryRequest, message: dict[str, Any], meta: dict[str, Any]
    ) -> Sent:
        channel = self._channel_for(request, meta)
        payload = {
            **message,
            "channel": channel,
            "metadata": {
                "event_type": "chimeway_delivery",
                "event_payload": {"delivery_id": request.idempotency_key},
            },
        }
        response = self._http.post(
            f"{self.base_url}/chat.postMessage",
            json=payload,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise http_calls.status_failure(
                response,
                f"{self.name}: chat.postMessage answered HTTP {response.status_code}",
                meta,
            )
        answer = http_calls.json_object(response)
        if answer is None or not response.is_success:
            raise http_calls.status_failure(
                response,
                f"{self.name}: chat.postMessage answered HTTP {response.status_code} "
                "without a Slack answer",
                meta,
            )
        if answer.get("ok") is True:
            ts = answer.get("ts")
            return Sent(
                provider_message_id=ts if isinstance(ts, str) else None,
                meta={**meta, "channel": answer.get("channel", channel)},
            )
        raise self._api_failure(answer, response, meta)

    def _channel_for(self, request: DeliveryRequest, meta: dict[str, Any]) -> str:
        if request.recipient is not None:
            own = request.recipient.data.get(RECIPIENT_CHANNEL_KEY)
            if isinstance(own, str) and own.strip():
                return own
        if self.channel is None:
            raise Permanent(
                f"{self.name}: no Slack channel: the recipient has no "
                f"{RECIPIENT_CHANNEL_KEY!r} in their data and the adapter has no channel",
                meta=meta,
            )
        return self.channel

    def _api_failure(
        self, answer: dict[str, Any], response: httpx.Response, meta: dict[str, Any]
    ) -> DeliveryFailure:
        error = _error_code(str(answer.get("error", ""))) or "unknown_error"
        meta = {**meta, "slack_error": error}
        message = f"{self.name}: chat.postMessage failed: {error}"
        if error in TEMPORARY_ERRORS:
            return Temporary(message, meta=meta, retry_after=http_calls.retry_after(response))
        return Permanent(message, meta=meta)


def _error_code(text: str) -> str | None:
    """Slack's error code (``channel_not_found``), or ``None`` when the text is not one."""
    code = text.strip()
    return code if _ERROR_CODE.fullmatch(code) else None
