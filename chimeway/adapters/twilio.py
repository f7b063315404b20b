"""SMS deliveries through Twilio's Messages API."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

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
from chimeway.adapters.types import (
    Bounced,
    DeliveryFailure,
    DeliveryRequest,
    Permanent,
    Sent,
    Temporary,
)
from chimeway.content import SmsContent, describe_validation_error
from chimeway.errors import ConfigurationError

#: Twilio error codes saying the ``To`` number cannot receive this SMS: the address is bad.
BOUNCED_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21214,  # 'To' phone number cannot be reached
        21217,  # phone number does not appear to be valid
        21265,  # 'To' number cannot be a short code
        21407,  # this phone number type does not support SMS
        21612,  # 'To' number is not currently reachable (unroutable)
        21614,  # 'To' number is not a valid mobile number
        21635,  # 'To' number cannot be a landline
    }
)
#: Twilio error codes worth retrying whatever the HTTP status says.
TEMPORARY_CODES = frozenset({20429})  # too many requests


class TwilioSmsAdapter:
    """Sends the sms content's ``text_body`` to the recipient's ``phone``.

    ``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json``, form-encoded ``To``,
    ``From`` (``from_number``) and/or ``MessagingServiceSid``, ``Body`` and, when given,
    ``StatusCallback``; HTTP basic auth with the account SID and auth token; the delivery's
    idempotency key in ``I-Twilio-Idempotency-Token``.

    2xx is :class:`Sent` with the message SID (``SM...``). 429 and 5xx are
    :class:`Temporary` (with ``Retry-After``). Other answers are :class:`Permanent`, except
    the error codes in :data:`BOUNCED_CODES` (invalid, unreachable, landline or non-mobile
    ``To`` numbers), which are :class:`Bounced`. Twilio's error code is in
    ``meta["twilio_error_code"]``; its message is not kept (it repeats the number).
    A recipient without a phone number is :class:`Permanent`. Timeouts and connection errors
    are :class:`Temporary`.
    """

    #: The profile field it sends to: planning suppresses (``no_address``) a delivery whose
    #: recipient has none.
    address = "phone"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        base_url: str = "https://api.twilio.com",
        name: str = "twilio",
        timeout: float = 15.0,
        capacity: int = 10,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = check_name("TwilioSmsAdapter", name)
        self.timeout = check_timeout("TwilioSmsAdapter", timeout)
        self.capacity = check_capacity("TwilioSmsAdapter", capacity)
        self.account_sid = check_text("TwilioSmsAdapter", "account_sid", account_sid)
        self._auth_token = check_text("TwilioSmsAdapter", "auth_token", auth_token)
        if from_number is None and messaging_service_sid is None:
            raise ConfigurationError("TwilioSmsAdapter needs from_number or messaging_service_sid")
        self.from_number = (
            None
            if from_number is None
            else check_text("TwilioSmsAdapter", "from_number", from_number)
        )
        self.messaging_service_sid = (
            None
            if messaging_service_sid is None
            else check_text("TwilioSmsAdapter", "messaging_service_sid", messaging_service_sid)
        )
        self.status_callback = (
            None
            if status_callback is None
            else check_url("TwilioSmsAdapter", "status_callback", status_callback)
        )
        base = check_url("TwilioSmsAdapter", "base_url", base_url).rstrip("/")
        self.messages_url = (
            f"{base}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"
        )
        self._http = http_calls.HttpClient(
            provider=self.name, timeout=self.timeout, capacity=self.capacity, verify=verify
        )

    def deliver(self, request: DeliveryRequest) -> Sent:
        meta: dict[str, Any] = {"provider": self.name}
        try:
            content = SmsContent.model_validate(request.content)
        except ValidationError as exc:
            raise Permanent(
                f"{self.name}: sms content is invalid: {describe_validation_error(exc)}",
                meta=meta,
            ) from exc
        phone = request.recipient.phone if request.recipient is not None else None
        if not phone:
            raise Permanent(f"{self.name}: the recipient has no phone number", meta=meta)
        form = {"To": phone, "Body": content.text_body}
        if self.from_number is not None:
            form["From"] = self.from_number
        if self.messaging_service_sid is not None:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.status_callback is not None:
            form["StatusCallback"] = self.status_callback
        response = self._http.post(
            self.messages_url,
            data=form,
            auth=(self.account_sid, self._auth_token),
            headers={"I-Twilio-Idempotency-Token": request.idempotency_key},
        )
        answer = http_calls.json_object(response)
        if response.is_success:
            sid = answer.get("sid") if answer else None
            status = answer.get("status") if answer else None
            return Sent(
                provider_message_id=sid if isinstance(sid, str) else None,
                meta={**meta, "status": status} if isinstance(status, str) else meta,
            )
        raise self._failure(response, answer, meta)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self._http.close()

    def _failure(
        self, response: httpx.Response, answer: dict[str, Any] | None, meta: dict[str, Any]
    ) -> DeliveryFailure:
        code = answer.get("code") if answer else None
        if not isinstance(code, int) or isinstance(code, bool):
            code = None
        meta = {**meta, "status_code": response.status_code}
        if code is not None:
            meta["twilio_error_code"] = code
            more_info = answer.get("more_info") if answer else None
            if isinstance(more_info, str):
                meta["more_info"] = more_info
        message = f"{self.name}: Messages API answered HTTP {response.status_code}" + (
            f", error {code}" if code is not None else ""
        )
        if http_calls.is_temporary_status(response.status_code) or code in TEMPORARY_CODES:
            return Temporary(message, meta=meta, retry_after=http_calls.retry_after(response))
        if code in BOUNCED_CODES:
            return Bounced(message, meta=meta)
        return Permanent(message, meta=meta)
