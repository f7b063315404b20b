"""The MIME message an email delivery becomes: multipart/alternative text + html, with a
``Message-ID`` made from the delivery id and RFC 8058 one-click unsubscribe headers."""

from __future__ import annotations

from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from chimeway.adapters.types import DeliveryRequest
from chimeway.content import EmailContent


class MessageProblem(ValueError):
    """The message cannot be built; the text names the field, never its value."""


class InvalidAddress(MessageProblem):
    """The recipient's email address is not one."""


def message_id(request: DeliveryRequest, domain: str) -> str:
    """``<{delivery_id}@{domain}>``: the same on every retry, so a receiver can recognise a
    repeat."""
    return f"<{request.delivery_id}@{domain}>"


def build_email(
    request: DeliveryRequest, content: EmailContent, *, sender: str, to: str, domain: str
) -> EmailMessage:
    """The message for ``request`` from ``sender`` to ``to``. Raises :class:`MessageProblem`
    when a header value would break the message (a line break in the subject or the
    unsubscribe URL), :class:`InvalidAddress` when ``to`` is not an address."""
    for field, value in (
        ("subject", content.subject),
        ("unsubscribe_url", request.unsubscribe_url or ""),
    ):
        if "\r" in value or "\n" in value:
            raise MessageProblem(f"{field} contains a line break")
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    if "\r" in to or "\n" in to:
        raise InvalidAddress("recipient email contains a line break")
    try:
        message["To"] = Address(addr_spec=to)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise InvalidAddress("recipient email is not a valid address") from exc
    message["Subject"] = content.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(request, domain)
    if request.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{request.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(content.text_body)
    message.add_alternative(content.html_body, subtype="html")
    return message
