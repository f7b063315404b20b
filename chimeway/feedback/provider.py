"""The contract every provider implements, and the registry that names them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from chimeway.errors import ConfigurationError
from chimeway.feedback.types import FeedbackEvent

# A provider's name is the last segment of its endpoint, POST /v1/webhooks/{name}.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class FeedbackProvider(Protocol):
    """Verifies and parses one provider's webhooks. Both methods are pure: no database, no
    network, no clock other than the one the provider was given.

    ``verify`` runs first, on the raw body exactly as received, and raises
    :class:`~chimeway.feedback.WebhookUnauthorized` unless the request is authentic. ``url`` is
    the public URL the provider called, for schemes that sign it (Twilio). Header names are
    matched in any letter case.

    ``parse`` turns a verified body into events, in the provider's order, and raises
    :class:`~chimeway.feedback.WebhookUnparseable` when the body is not in the provider's
    format. Events that say nothing about a message (an account-level change, a status that
    is not an outcome) are left out, so a body can yield no event at all.
    """

    name: str

    def verify(self, body: bytes, headers: Mapping[str, str], url: str | None = None) -> None: ...

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[FeedbackEvent]: ...


def providers_by_name(*providers: FeedbackProvider) -> dict[str, FeedbackProvider]:
    """The providers keyed by name; :class:`ConfigurationError` when a name is not a valid URL
    segment or two providers share one."""
    by_name: dict[str, FeedbackProvider] = {}
    for provider in providers:
        name = provider.name
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"feedback provider name {name!r} must be 1-64 lowercase letters, digits, "
                "'_' or '-', starting with a letter or digit"
            )
        if name in by_name:
            raise ConfigurationError(
                f"two feedback providers are named {name!r}; give one another name"
            )
        by_name[name] = provider
    return by_name
