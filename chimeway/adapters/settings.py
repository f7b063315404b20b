"""Checks for the settings every built-in adapter shares: ``name``, ``timeout``, ``capacity``.

* ``name``: the provider's name, recorded in every answer's ``meta["provider"]``.
* ``timeout``: seconds one call may wait on the provider (each network step is bounded by it).
* ``capacity``: how many sends the adapter may run at once. The engine gives each adapter its
  own bulkhead of this size, so a hung provider holds at most ``capacity`` send threads.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from chimeway.errors import ConfigurationError


def check_name(adapter: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{adapter} name must be a non-blank string, got {name!r}")
    return name


def check_timeout(adapter: str, timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"{adapter} timeout must be a number of seconds > 0, got {timeout!r}"
        )
    return float(timeout)


def check_capacity(adapter: str, capacity: object) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ConfigurationError(f"{adapter} capacity must be an integer >= 1, got {capacity!r}")
    return capacity


def check_text(adapter: str, field: str, value: object) -> str:
    """A required, non-blank string setting (never echoed: it may be a secret)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{adapter} {field} must be a non-blank string")
    return value


def check_url(adapter: str, field: str, value: object) -> str:
    """An absolute http(s) URL (never echoed: it may carry a token)."""
    if not isinstance(value, str) or not is_http_url(value):
        raise ConfigurationError(f"{adapter} {field} must be an absolute http:// or https:// URL")
    return value


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
