"""Secrets never reach the database: provider responses, event params and signal payloads are
redacted before they are stored."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

# A key is secret when one of its words is one of these ("Auth-Token", "api_key",
# "clientSecret"), not when it merely contains the letters ("author").
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "token",
        "secret",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "apikey",
    }
)
REDACTED = "[redacted]"
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret(key: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(key)]
    joined = [a + b for a, b in itertools.pairwise(words)]  # "api", "key" -> "apikey"
    return any(w in SECRET_WORDS for w in [*words, *joined])


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
