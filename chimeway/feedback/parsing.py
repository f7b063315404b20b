"""Pieces every provider's parser needs: JSON decoding, our delivery id wherever a provider
echoes it, timestamps, and the filter that keeps evidence free of personal data."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from chimeway.feedback.errors import WebhookUnparseable

# Codes and short enum-like words only: no "@" (addresses), ":" or "/" (URLs), "+" (phone
# numbers), nor long free text that could quote a recipient.
_SAFE_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


def load_json(body: bytes) -> Any:
    """The decoded JSON body; :class:`WebhookUnparseable` when it is not UTF-8 JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WebhookUnparseable("the body is not UTF-8 JSON") from None


def expect_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookUnparseable(f"{where} is not a JSON object")
    return value


def optional_str(value: Any, where: str) -> str | None:
    """``value`` when it is a non-empty string, ``None`` when missing or empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebhookUnparseable(f"{where} is not a string")
    return value


def delivery_id(value: Any, where: str) -> uuid.UUID | None:
    """Our delivery id as a provider echoed it (a custom argument, user variable or
    metadata value); ``None`` when absent; :class:`WebhookUnparseable` when not a UUID."""
    text = optional_str(value, where)
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise WebhookUnparseable(f"{where} is not a UUID") from None


def delivery_id_from_message_id(message_id: str | None) -> uuid.UUID | None:
    """The delivery id in a ``Message-ID`` of ours (``<delivery-id@domain>``, brackets
    optional); ``None`` for anybody else's Message-ID."""
    if not message_id:
        return None
    local, at, _domain = message_id.strip().strip("<>").partition("@")
    if not at:
        return None
    try:
        return uuid.UUID(local)
    except ValueError:
        return None


def iso_time(value: Any, where: str) -> datetime | None:
    """An aware ISO 8601 instant in UTC; ``None`` when absent."""
    text = optional_str(value, where)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise WebhookUnparseable(f"{where} is not an ISO 8601 time") from None
    if parsed.utcoffset() is None:
        raise WebhookUnparseable(f"{where} has no UTC offset")
    return parsed.astimezone(UTC)


def unix_time(value: Any, where: str) -> datetime | None:
    """A Unix time in seconds (an int, a float, or a string of one) in UTC; ``None`` when
    absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise WebhookUnparseable(f"{where} is not a Unix time")
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise WebhookUnparseable(f"{where} is not a Unix time") from None


def evidence(**facts: Any) -> dict[str, Any]:
    """The facts worth keeping: booleans, integers and short codes; anything else (absent,
    free text, or a value that looks like an address or URL) is left out."""
    kept: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, bool | int) or (
            isinstance(value, str) and _SAFE_TEXT.fullmatch(value)
        ):
            kept[key] = value
    return kept
