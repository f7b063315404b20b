"""Checks of caller input shared by the public writes; each raises the caller's error type."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chimeway.errors import ChimewayError


def non_blank(name: str, value: Any, error: type[ChimewayError]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise error(f"{name} must be a non-blank string, got {value!r}")
    return value


def json_object(name: str, value: Any, error: type[ChimewayError]) -> dict[str, Any]:
    """A copy of ``value`` once it is known to be a JSON-serializable mapping."""
    if not isinstance(value, Mapping):
        raise error(f"{name} must be a JSON object, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be JSON-serializable: {exc}") from exc
    return dict(value)
