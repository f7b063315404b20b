"""Signed, expiring tokens for unsubscribe links and inbox access (design §13, §14), pure.

A token is ``v1.`` followed by an `itsdangerous` URL-safe serialization: compact JSON claims,
base64url (zlib-compressed when that is shorter), then an HMAC-SHA256 signature. Each purpose
signs under its own salt, so an unsubscribe token never verifies as an inbox token or the other
way round. Keys rotate: tokens are signed with the first secret and verified against all.

Claims are signed, not encrypted: whoever holds a token can read its tenant and recipient ids.
Expiry is an absolute instant kept to the second (rounded down); a token is expired from that
instant on. Nothing here reads the clock: ``now`` is a parameter.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadPayload, BadSignature, URLSafeSerializer

from chimeway.errors import ConfigurationError, InvalidArgument
from chimeway.policy.errors import InvalidToken, TokenExpired
from chimeway.policy.preferences import PreferenceScope

MIN_SECRET_BYTES = 32
_VERSION = "v1"
_MAX_LENGTH = 4096
_SHAPE = re.compile(rf"{_VERSION}\.[A-Za-z0-9_.\-]+")
_SCOPE_KEYS = {"c": "channel", "g": "category", "w": "workflow"}


@dataclass(frozen=True, slots=True)
class UnsubscribeClaims:
    """Who unsubscribes from what: a recipient of a tenant, from ``scope``."""

    tenant_id: str
    recipient_id: str
    scope: PreferenceScope
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class InboxClaims:
    """Read access to one recipient's in-app inbox in one tenant."""

    tenant_id: str
    recipient_id: str
    expires_at: datetime


class TokenSigner:
    """Signs and verifies tokens with the app's secrets, newest first.

    ``secrets[0]`` signs; every secret verifies, so a new secret can be put first while links
    signed with the old one keep working until the old one is dropped. Each secret must be at
    least 32 bytes (a ``str`` counts in UTF-8 bytes).
    """

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        keys = _keys(secrets)
        options: dict[str, Any] = {"key_derivation": "hmac", "digest_method": hashlib.sha256}
        # itsdangerous signs with the last key of its list and tries them all when verifying.
        newest_last = list(reversed(keys))
        self._unsubscribe = URLSafeSerializer(
            newest_last, salt=f"chimeway.unsubscribe.{_VERSION}", signer_kwargs=options
        )
        self._inbox = URLSafeSerializer(
            newest_last, salt=f"chimeway.inbox.{_VERSION}", signer_kwargs=options
        )

    def sign_unsubscribe(self, claims: UnsubscribeClaims) -> str:
        """A token for an unsubscribe link (choose an expiry of months, not days)."""
        payload = _base_payload(claims.tenant_id, claims.recipient_id, claims.expires_at)
        if not isinstance(claims.scope, PreferenceScope):
            raise InvalidArgument(f"scope: expected a PreferenceScope, got {claims.scope!r}")
        for key, field in _SCOPE_KEYS.items():
            value = getattr(claims.scope, field)
            if value is not None:
                payload[key] = value
        return f"{_VERSION}.{self._unsubscribe.dumps(payload)}"

    def verify_unsubscribe(self, token: str, *, now: datetime) -> UnsubscribeClaims:
        """The claims of a valid unsubscribe token; :class:`InvalidToken` otherwise."""
        _require_aware(now)
        data = _load(self._unsubscribe, token, "unsubscribe")
        scope_values = {field: data.pop(key, None) for key, field in _SCOPE_KEYS.items()}
        tenant_id, recipient_id, expires_at = _base_claims(data, "unsubscribe")
        try:
            scope = PreferenceScope(**scope_values)
        except InvalidArgument:
            raise InvalidToken("unsubscribe token: malformed claims") from None
        _check_expiry(expires_at, now, "unsubscribe")
        return UnsubscribeClaims(tenant_id, recipient_id, scope, expires_at)

    def sign_inbox(self, claims: InboxClaims) -> str:
        """A token that lets one recipient read their own inbox until it expires."""
        payload = _base_payload(claims.tenant_id, claims.recipient_id, claims.expires_at)
        return f"{_VERSION}.{self._inbox.dumps(payload)}"

    def verify_inbox(self, token: str, *, now: datetime) -> InboxClaims:
        """The claims of a valid inbox token; :class:`InvalidToken` otherwise."""
        _require_aware(now)
        data = _load(self._inbox, token, "inbox")
        tenant_id, recipient_id, expires_at = _base_claims(data, "inbox")
        _check_expiry(expires_at, now, "inbox")
        return InboxClaims(tenant_id, recipient_id, expires_at)


def _keys(secrets: Sequence[str | bytes]) -> list[bytes]:
    if isinstance(secrets, str | bytes) or not isinstance(secrets, Sequence) or not secrets:
        raise ConfigurationError("secrets: expected a non-empty list of secrets, newest first")
    keys = []
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str | bytes):
            raise ConfigurationError(f"secrets[{index}]: expected str or bytes")
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"secrets[{index}]: must be at least {MIN_SECRET_BYTES} bytes, got {len(key)}"
            )
        keys.append(key)
    return keys


def _base_payload(tenant_id: str, recipient_id: str, expires_at: datetime) -> dict[str, Any]:
    for name, value in (("tenant_id", tenant_id), ("recipient_id", recipient_id)):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{name}: expected a non-empty string, got {value!r}")
    if not isinstance(expires_at, datetime) or expires_at.utcoffset() is None:
        raise InvalidArgument("expires_at: must be a timezone-aware datetime")
    return {"t": tenant_id, "r": recipient_id, "x": math.floor(expires_at.timestamp())}


def _load(serializer: URLSafeSerializer, token: str, purpose: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > _MAX_LENGTH or not _SHAPE.fullmatch(token):
        raise InvalidToken(f"{purpose} token: malformed")
    try:
        data = serializer.loads(token[len(_VERSION) + 1 :])
    except BadPayload:  # signed by us, yet not the JSON we write
        raise InvalidToken(f"{purpose} token: malformed claims") from None
    except BadSignature:
        raise InvalidToken(
            f"{purpose} token: signature does not match (forged, altered or for another use)"
        ) from None
    if not isinstance(data, dict):
        raise InvalidToken(f"{purpose} token: malformed claims")
    return data


def _base_claims(data: dict[str, Any], purpose: str) -> tuple[str, str, datetime]:
    tenant_id, recipient_id, expiry = data.pop("t", None), data.pop("r", None), data.pop("x", None)
    if (
        data
        or not isinstance(tenant_id, str)
        or not tenant_id
        or not isinstance(recipient_id, str)
        or not recipient_id
        or isinstance(expiry, bool)
        or not isinstance(expiry, int)
    ):
        raise InvalidToken(f"{purpose} token: malformed claims")
    try:
        expires_at = datetime.fromtimestamp(expiry, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken(f"{purpose} token: malformed claims") from None
    return tenant_id, recipient_id, expires_at


def _require_aware(now: datetime) -> None:
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InvalidArgument("now: must be a timezone-aware datetime")


def _check_expiry(expires_at: datetime, now: datetime, purpose: str) -> None:
    if now >= expires_at:
        raise TokenExpired(f"{purpose} token: expired at {expires_at.isoformat()}")
