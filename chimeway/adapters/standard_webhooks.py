"""Signing per the Standard Webhooks spec (https://www.standardwebhooks.com/), symmetric
scheme: ``v1,`` + base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}"))."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from chimeway.errors import ConfigurationError

SECRET_PREFIX = "whsec_"
#: The spec asks for at least 24 random bytes (192 bits) and at most 64.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def decode_secret(secret: object) -> bytes:
    """The key bytes of a ``whsec_``-prefixed base64 secret. The message never shows the
    secret."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError("webhook secret must be a string starting with 'whsec_'")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("webhook secret is not valid base64 after 'whsec_'") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ConfigurationError(
            f"webhook secret must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"got {len(key)}"
        )
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated, so a secret
    can be rotated without downtime (the receiver accepts any that matches)."""
    return " ".join(signature(key, msg_id, timestamp, body) for key in keys)
