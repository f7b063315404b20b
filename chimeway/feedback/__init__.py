"""Provider feedback, the pure half: verify a provider's webhook on its raw body and parse it
into normalised :class:`FeedbackEvent` values. Storing and processing them is the engine's.
"""

from chimeway.feedback.errors import WebhookUnauthorized, WebhookUnparseable
from chimeway.feedback.mailgun import MailgunProvider
from chimeway.feedback.postmark import PostmarkProvider
from chimeway.feedback.provider import FeedbackProvider, providers_by_name
from chimeway.feedback.sendgrid import SendGridProvider
from chimeway.feedback.standard_webhooks import StandardWebhooksProvider
from chimeway.feedback.twilio import TwilioProvider
from chimeway.feedback.types import DELIVERY_ID_KEY, FeedbackEvent, FeedbackKind

__all__ = [
    "DELIVERY_ID_KEY",
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackProvider",
    "MailgunProvider",
    "PostmarkProvider",
    "SendGridProvider",
    "StandardWebhooksProvider",
    "TwilioProvider",
    "WebhookUnauthorized",
    "WebhookUnparseable",
    "providers_by_name",
]
