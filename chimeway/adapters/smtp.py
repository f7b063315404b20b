"""Email deliveries over SMTP (stdlib ``smtplib``), one connection kept per send thread."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any, Literal

from pydantic import ValidationError

from chimeway.adapters.email_message import (
    InvalidAddress,
    MessageProblem,
    build_email,
    message_id,
)
from chimeway.adapters.settings import check_capacity, check_name, check_text, check_timeout
from chimeway.adapters.types import (
    Bounced,
    DeliveryFailure,
    DeliveryRequest,
    Permanent,
    Sent,
    Temporary,
)
from chimeway.content import EmailContent, describe_validation_error
from chimeway.errors import ConfigurationError

logger = logging.getLogger(__name__)

Security = Literal["starttls", "ssl", "none"]
Stage = Literal["session", "mail", "rcpt", "data"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
#: Basic reply codes that mean "no such mailbox" when they answer RCPT TO.
MAILBOX_UNKNOWN_CODES = frozenset({550, 551, 553})
#: Enhanced status codes of class 5.1 (addressing) that are about the sender, not the
#: recipient (RFC 3463): those stay :class:`Permanent`.
SENDER_ADDRESS_CODES = frozenset({"5.1.7", "5.1.8"})
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_ADDRESS_LIKE = re.compile(r"[^\s<>@\"']+@[^\s<>@\"']+")


class SmtpAdapter:
    """Sends the email content (``subject``, ``text_body``, ``html_body``) as a
    multipart/alternative message to the recipient's ``email``.

    ``security``: ``"starttls"`` (the default; port 587), ``"ssl"`` (implicit TLS,
    ``SMTP_SSL``; port 465) or ``"none"`` (port 25; only for a relay on a trusted network).
    ``ssl_context`` verifies the server (the system's trust store by default); ``username``
    and ``password`` log in after TLS is up. ``sender`` is the ``From`` header (``"Acme
    <noreply@acme.example>"``), its address the envelope sender. ``message_id_domain`` (by
    default the sender's domain) makes ``Message-ID: <{delivery_id}@{domain}>``, which is
    the message id returned; ``request.unsubscribe_url`` adds RFC 8058 ``List-Unsubscribe``
    and ``List-Unsubscribe-Post`` headers.

    Each send thread keeps its own connection and reuses it; a connection the server has
    dropped since the last send is replaced once, transparently. :meth:`close` quits them
    all (call it when no send is running).

    Answers: 4xx is :class:`Temporary`; 5xx is :class:`Permanent`, except a mailbox-unknown
    answer to the recipient (550/551/553, or an enhanced status 5.1.x) which is
    :class:`Bounced`; connection errors and timeouts are :class:`Temporary`. A recipient
    without an email address is :class:`Permanent`; a malformed one is :class:`Bounced`.
    The server's reply text is kept with anything that looks like an address masked.
    """

    #: The profile field it sends to: planning suppresses (``no_address``) a delivery whose
    #: recipient has none.
    address = "email"

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        sender: str,
        security: Security = "starttls",
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        message_id_domain: str | None = None,
        local_hostname: str | None = None,
        name: str = "smtp",
        timeout: float = 30.0,
        capacity: int = 4,
    ) -> None:
        self.name = check_name("SmtpAdapter", name)
        self.timeout = check_timeout("SmtpAdapter", timeout)
        self.capacity = check_capacity("SmtpAdapter", capacity)
        self.host = check_text("SmtpAdapter", "host", host)
        if security not in DEFAULT_PORTS:
            raise ConfigurationError(
                f"SmtpAdapter security must be one of {sorted(DEFAULT_PORTS)}, got {security!r}"
            )
        self.security: Security = security
        if port is None:
            port = DEFAULT_PORTS[security]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"SmtpAdapter port must be 1-65535, got {port!r}")
        self.port = port
        if (username is None) != (password is None):
            raise ConfigurationError("SmtpAdapter username and password go together")
        if username is not None and security == "none":
            raise ConfigurationError(
                "SmtpAdapter will not send a password without TLS: use security='starttls' or 'ssl'"
            )
        self.username = username
        self._password = password
        self.sender = check_text("SmtpAdapter", "sender", sender)
        self.envelope_sender = parseaddr(sender)[1]
        if "@" not in self.envelope_sender:
            raise ConfigurationError("SmtpAdapter sender must contain an email address")
        domain = message_id_domain or self.envelope_sender.rpartition("@")[2]
        if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
            raise ConfigurationError(
                "SmtpAdapter message_id_domain must be an ASCII domain name "
                f"(letters, digits, '-' and '.'), got {domain!r}"
            )
        self.message_id_domain = domain
        self.local_hostname = local_hostname
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[smtplib.SMTP] = set()

    def deliver(self, request: DeliveryRequest) -> Sent:
        meta: dict[str, Any] = {"provider": self.name}
        to = request.recipient.email if request.recipient is not None else None
        if not to:
            raise Permanent(f"{self.name}: the recipient has no email address", meta=meta)
        message = self._message(request, to, meta)
        try:
            self._send(message, to, request)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._failure(exc, meta) from exc
        return Sent(provider_message_id=message_id(request, self.message_id_domain), meta=meta)

    def close(self) -> None:
        """Quit every connection this adapter holds (on any thread)."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            _quit(connection)

    def _message(self, request: DeliveryRequest, to: str, meta: dict[str, Any]) -> EmailMessage:
        try:
            content = EmailContent.model_validate(request.content)
        except ValidationError as exc:
            raise Permanent(
                f"{self.name}: email content is invalid: {describe_validation_error(exc)}",
                meta=meta,
            ) from exc
        try:
            return build_email(
                request, content, sender=self.sender, to=to, domain=self.message_id_domain
            )
        except InvalidAddress as exc:
            raise Bounced(f"{self.name}: {exc}", meta=meta) from exc
        except MessageProblem as exc:
            raise Permanent(f"{self.name}: {exc}", meta=meta) from exc

    def _send(self, message: EmailMessage, to: str, request: DeliveryRequest) -> None:
        connection, reused = self._connection()
        try:
            self._send_on(connection, message, to)
        except (smtplib.SMTPException, OSError) as exc:
            if not (reused and _dropped(exc, connection)):
                raise
            logger.info(
                "SMTP connection dropped by the server; reconnecting once",
                extra={
                    "action": "adapter.smtp_reconnect",
                    "provider": self.name,
                    "delivery_id": str(request.delivery_id),
                    "error": type(exc).__name__,
                },
            )
            connection, _ = self._connection()
            self._send_on(connection, message, to)

    def _send_on(self, connection: smtplib.SMTP, message: EmailMessage, to: str) -> None:
        """Send on ``connection``; forget it unless it is still usable afterwards."""
        try:
            connection.send_message(message, self.envelope_sender, [to])
        except smtplib.SMTPResponseException:
            if connection.sock is None:  # smtplib closed it after a 421 answer
                self._discard(connection)
            raise
        except BaseException:
            self._discard(connection)
            raise

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's connection, and whether it was used before."""
        existing: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if existing is not None and existing.sock is not None:  # not closed by close()
            return existing, True
        connection = self._connect()
        self._local.connection = connection
        with self._lock:
            self._connections.add(connection)
        return connection, False

    def _connect(self) -> smtplib.SMTP:
        connection: smtplib.SMTP
        if self.security == "ssl":
            connection = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=self._ssl_context,
            )
        else:
            connection = smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
            )
        try:
            connection.ehlo()
            if self.security == "starttls":
                connection.starttls(context=self._ssl_context)
                connection.ehlo()
            if self.username is not None and self._password is not None:
                connection.login(self.username, self._password)
        except BaseException:
            connection.close()
            raise
        return connection

    def _discard(self, connection: smtplib.SMTP) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._connections.discard(connection)
        connection.close()

    def _failure(self, exc: Exception, meta: dict[str, Any]) -> DeliveryFailure:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            return self._refused("rcpt", code, reply, meta)
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return self._refused("mail", exc.smtp_code, exc.smtp_error, meta)
        if isinstance(exc, smtplib.SMTPDataError):
            return self._refused("data", exc.smtp_code, exc.smtp_error, meta)
        if isinstance(exc, smtplib.SMTPResponseException):  # connect, HELO, STARTTLS, AUTH
            return self._refused("session", exc.smtp_code, exc.smtp_error, meta)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return Permanent(
                f"{self.name}: the server does not support what this adapter needs ({exc})",
                meta=meta,
            )
        if _timed_out(exc):
            return Temporary(f"{self.name}: no answer in time", meta={**meta, "timeout": True})
        return Temporary(
            f"{self.name}: connection failed ({type(exc).__name__}: {_mask(str(exc))})",
            meta=meta,
        )

    def _refused(
        self, stage: Stage, code: int, reply: bytes | str, meta: dict[str, Any]
    ) -> DeliveryFailure:
        text = _mask(reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply)
        enhanced = enhanced_status(text)
        meta = {**meta, "smtp_code": code, "smtp_stage": stage}
        if enhanced is not None:
            meta["smtp_enhanced_status"] = enhanced
        failure = classify_reply(stage, code, enhanced)
        return failure(f"{self.name}: {stage} refused: {code} {text}".rstrip(), meta=meta)


def classify_reply(stage: Stage, code: int, enhanced: str | None) -> type[DeliveryFailure]:
    """The failure class of an SMTP refusal at ``stage``.

    4xx (and anything that is not 5xx) is :class:`Temporary`. A 5xx is :class:`Bounced` when
    it says the recipient's mailbox is unknown: an enhanced status 5.1.x (other than the
    sender's 5.1.7/5.1.8) at RCPT or DATA, or, at RCPT without an enhanced status, 550, 551
    or 553. Any other 5xx is :class:`Permanent` (a 550 5.7.1 policy refusal among them).
    """
    if not 500 <= code < 600:
        return Temporary
    if stage in ("rcpt", "data") and enhanced is not None:
        if enhanced.startswith("5.1.") and enhanced not in SENDER_ADDRESS_CODES:
            return Bounced
        return Permanent
    if stage == "rcpt" and code in MAILBOX_UNKNOWN_CODES:
        return Bounced
    return Permanent


def enhanced_status(reply: str) -> str | None:
    """The RFC 3463 enhanced status code a reply starts with (``"5.1.1"``), if any."""
    match = _ENHANCED.match(reply)
    return match.group(1) if match else None


def _timed_out(exc: BaseException) -> bool:
    """A socket timeout, raised as such or wrapped by smtplib in SMTPServerDisconnected."""
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _dropped(exc: BaseException, connection: smtplib.SMTP) -> bool:
    """The server closed the connection (while it sat idle, most likely): a 421 answer, a
    disconnect or a reset; not a timeout, which says the server is slow."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421 and connection.sock is None
    disconnected = isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError)
    return disconnected and not _timed_out(exc)


def _mask(text: str) -> str:
    """``text`` on one line, at most 300 characters, with address-like words masked."""
    return " ".join(_ADDRESS_LIKE.sub("[address]", text).split())[:300]


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
