"""Why a provider webhook was refused (the classes live in :mod:`chimeway.errors`). Messages
name the header or field at fault and never echo the request body, a header value or a
secret."""

from chimeway.errors import WebhookUnauthorized, WebhookUnparseable

__all__ = ["WebhookUnauthorized", "WebhookUnparseable"]
