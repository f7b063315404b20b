"""Secrets never reach the database: provider responses are redacted before they are stored."""

from __future__ import annotations

import math
from typing import Any

SECRET_MARKERS = ("password", "token", "secret", "api_key", "apikey", "auth")
REDACTED = "[redacted]"


def is_secret(key: str) -> bool:
    normalized = key.lower().replace("-", "_")
    return any(marker in normalized for marker in SECRET_MARKERS)


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, dict):
        return {str(k): (REDACTED if is_secret(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, int | float | bool):
        return value
    return clean_text(str(value))


def clean_text(text: str) -> str:
    """PostgreSQL text cannot hold NUL characters; providers sometimes send them."""
    return text.replace("\x00", "\\u0000")
