"""Why a provider webhook was refused. Messages name the header or field at fault and never
echo the request body, a header value or a secret."""

from __future__ import annotations

from chimeway.errors import ChimewayError


class WebhookUnauthorized(ChimewayError):
    """The webhook request could not be authenticated."""


class WebhookUnparseable(ChimewayError):
    """The webhook body is not in the provider's format."""
