"""Twilio Messaging status callbacks (form-encoded POSTs to the message's StatusCallback).

Verification, per "Secure webhooks" (https://www.twilio.com/docs/usage/webhooks/webhooks-security):
``X-Twilio-Signature`` is the base64 HMAC-SHA1, under the account's Auth Token, of the full
URL Twilio requested (scheme, host, path and query string) followed by every POST parameter
sorted by name, each name immediately followed by its value. The URL must be the public one
Twilio called, not the one a proxy forwarded to the app: pass it as ``url`` to
:meth:`TwilioProvider.verify`, or fix it once with ``public_url=``. As Twilio's own helper
libraries do, the URL is tried as given and with its default port added or removed.

Payload, per "Track the message status of outbound messages"
(https://www.twilio.com/docs/messaging/guides/track-outbound-message-status):
``MessageSid``, ``MessageStatus`` (queued, sending, sent, delivered, undelivered, failed,
read, ...) and, for a failure, ``ErrorCode`` (https://www.twilio.com/docs/api/errors).
A status change happens once per message, so ``{MessageSid}:{MessageStatus}`` is the event
id. Only outcomes are reported: delivered, undelivered and failed; the rest are left out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from chimeway.errors import ConfigurationError
from chimeway.feedback import parsing
from chimeway.feedback.errors import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.types import FeedbackEvent, FeedbackKind
from chimeway.feedback.verifying import required_header

SIGNATURE_HEADER = "X-Twilio-Signature"
_DEFAULT_PORTS = {"http": 80, "https": 443}

# ErrorCode -> (kind, permanent) for undelivered/failed; any other code is a failure whose
# permanence is unknown.
ERROR_CODES: dict[str, tuple[FeedbackKind, bool | None]] = {
    "21211": (FeedbackKind.BOUNCED, True),  # invalid 'To' phone number
    "21614": (FeedbackKind.BOUNCED, True),  # 'To' number is not a valid mobile number
    "30005": (FeedbackKind.BOUNCED, True),  # unknown destination handset
    "30006": (FeedbackKind.BOUNCED, True),  # landline or unreachable carrier
    "21610": (FeedbackKind.UNSUBSCRIBED, None),  # the recipient replied STOP
    "30001": (FeedbackKind.FAILED, False),  # queue overflow
    "30003": (FeedbackKind.FAILED, False),  # unreachable destination handset (off, no signal)
    "30004": (FeedbackKind.FAILED, True),  # message blocked
    "30007": (FeedbackKind.FAILED, True),  # message filtered by the carrier
}


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio computes for a POST of ``params`` to ``url``."""
    signed = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` as given, then with its scheme's default port removed (when written) or added
    (when not)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None or not parts.netloc:
        return [url]
    if port is None:
        netloc = f"{parts.netloc}:{default}"
    elif port == default:
        netloc = parts.netloc.removesuffix(f":{default}")
    else:
        return [url]
    return [url, urlunsplit(parts._replace(netloc=netloc))]


def form_params(body: bytes) -> list[tuple[str, str]]:
    """The form-encoded parameters of ``body``, blanks kept; :class:`WebhookUnparseable`
    when it is not UTF-8 form data."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        raise WebhookUnparseable("the body is not form-encoded UTF-8") from None


class TwilioProvider:
    """Twilio status callbacks signed with the account's ``auth_token``.

    ``public_url``, when given, is the URL Twilio is configured to call; it replaces the
    ``url`` passed to :meth:`verify`, for apps behind a proxy that cannot rebuild it.
    """

    def __init__(
        self, auth_token: str, *, name: str = "twilio", public_url: str | None = None
    ) -> None:
        if not auth_token:
            raise ConfigurationError("the Twilio auth token is empty")
        self.name = name
        self._auth_token = auth_token
        self._public_url = public_url

    def __repr__(self) -> str:
        return f"TwilioProvider(name={self.name!r})"

    def verify(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None:
        given = required_header(headers, SIGNATURE_HEADER).encode()
        public_url = self._public_url or url
        if not public_url:
            raise WebhookUnauthorized(
                "Twilio signs the request URL: pass url= or configure public_url="
            )
        try:
            params = form_params(body)
        except WebhookUnparseable:
            raise WebhookUnauthorized("the body is not form data, which Twilio signs") from None
        for candidate in url_variants(public_url):
            expected = signature(self._auth_token, candidate, params).encode()
            if hmac.compare_digest(expected, given):
                return
        raise WebhookUnauthorized(f"the {SIGNATURE_HEADER} does not match the URL and body")

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[FeedbackEvent]:
        params = dict(form_params(body))
        sid = parsing.optional_str(params.get("MessageSid"), "MessageSid")
        status = parsing.optional_str(params.get("MessageStatus"), "MessageStatus")
        if sid is None or status is None:
            raise WebhookUnparseable("MessageSid and MessageStatus are required")
        error_code = params.get("ErrorCode") or None
        permanent: bool | None = None
        if status == "delivered":
            kind = FeedbackKind.DELIVERED
        elif status in ("undelivered", "failed"):
            kind, permanent = ERROR_CODES.get(error_code or "", (FeedbackKind.FAILED, None))
        else:
            return []  # accepted, queued, sending, sent, read, ...: not an outcome
        return [
            FeedbackEvent(
                provider=self.name,
                provider_event_id=f"{sid}:{status}",
                kind=kind,
                delivery_id=None,
                provider_message_id=sid,
                occurred_at=None,
                evidence=parsing.evidence(status=status, error_code=error_code),
                permanent=permanent,
            )
        ]
