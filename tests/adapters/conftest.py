"""Real servers for the adapter tests, on 127.0.0.1 and free ports: an SMTP server
(aiosmtpd) that keeps what it receives, and HTTP servers (stdlib ``ThreadingHTTPServer``)
that record every request and answer from a script."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from chimeway.adapters import DeliveryRequest, RecipientProfile

EMAIL = {"subject": "Your invoice", "text_body": "Plain words.", "html_body": "<p>Rich words.</p>"}
ADDRESS = "ada@example.test"
PHONE = "+15005550006"


def make_request(
    channel: str = "email",
    content: dict[str, Any] | None = None,
    *,
    recipient: RecipientProfile | None = None,
    unsubscribe_url: str | None = None,
    attempt_number: int = 1,
) -> DeliveryRequest:
    """A request to ``ada`` with ``recipient`` (by default: an email address and a phone)."""
    return DeliveryRequest(
        delivery_id=uuid.uuid4(),
        tenant_id="acme",
        recipient_id="ada",
        channel=channel,
        content=dict(EMAIL if content is None else content),
        attempt_number=attempt_number,
        recipient=recipient or RecipientProfile(id="ada", email=ADDRESS, phone=PHONE),
        unsubscribe_url=unsubscribe_url,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- SMTP -------------------------------------------------------------------------------


@dataclass
class Received:
    """One message the SMTP server accepted, and the connection it came on."""

    connection: int
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class Mailbox:
    """aiosmtpd handler: keeps accepted messages. ``rcpt_answer``/``data_answer`` make it
    refuse instead, ``mail_answer`` answers the next MAIL FROM (once), ``hold`` makes DATA
    wait for that event. ``connections`` counts the SMTP sessions that sent mail."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.mail_answer: str | None = None
        self.rcpt_answer: str | None = None
        self.data_answer: str | None = None
        self.hold: threading.Event | None = None
        self._servers: list[SMTP] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        answer, self.mail_answer = self.mail_answer, None
        if answer is not None:
            return answer
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_answer is not None:
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if server not in self._servers:
            self._servers.append(server)
        if self.hold is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 30)
        if self.data_answer is not None:
            return self.data_answer
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(
            Received(
                connection=self._servers.index(server),
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
            )
        )
        return "250 Message accepted for delivery"

    @property
    def connections(self) -> int:
        return len(self._servers)

    def drop_connections(self) -> None:
        """Close every connection that sent mail, as a server's idle timeout would."""
        assert self.loop is not None

        async def close_all() -> None:
            for server in self._servers:
                if server.transport is not None:
                    server.transport.close()
            await asyncio.sleep(0)  # one loop turn: the sockets are closed after it
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=5)


@dataclass
class SmtpServer:
    host: str
    port: int
    mailbox: Mailbox


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority made for this test run; it signs the servers' certificates."""
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


SmtpFactory = Callable[..., SmtpServer]


@pytest.fixture
def start_smtp() -> Iterator[SmtpFactory]:
    """Start an aiosmtpd server: ``start_smtp(tls=..., implicit_tls=..., users=...)``."""
    controllers: list[Controller] = []

    def start(
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
    ) -> SmtpServer:
        mailbox = Mailbox()
        kwargs: dict[str, Any] = {}
        if tls is not None and implicit_tls:
            kwargs["ssl_context"] = tls
        elif tls is not None:
            kwargs.update(tls_context=tls, require_starttls=True)
        if users is not None:
            kwargs.update(authenticator=_authenticator(users), auth_required=True)
            kwargs["auth_require_tls"] = tls is not None
        port = free_port()
        controller = Controller(
            mailbox, hostname="127.0.0.1", port=port, server_hostname="mx.test", **kwargs
        )
        controller.start()
        controllers.append(controller)
        mailbox.loop = controller.loop
        return SmtpServer("127.0.0.1", port, mailbox)

    yield start
    for controller in controllers:
        hold = controller.handler.hold
        if hold is not None:
            hold.set()
        controller.stop()


def _authenticator(users: dict[str, str]) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


@pytest.fixture
def smtp_server(start_smtp: SmtpFactory) -> SmtpServer:
    """A plain SMTP server (no TLS, no auth)."""
    return start_smtp()


# --- HTTP -------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the HTTP server answers; with ``hold``, only once that event is set."""

    status: int = 200
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpServer:
    """Records every request; answers each with the next scripted :class:`Reply`, or
    ``default`` once the script is used up."""

    def __init__(self, default: Reply) -> None:
        self.requests: list[Recorded] = []
        self.default = default
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._holds: list[threading.Event] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def then(self, *replies: Reply) -> HttpServer:
        with self._lock:
            self._script.extend(replies)
            self._holds.extend(r.hold for r in replies if r.hold is not None)
        return self

    def take(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._script.popleft() if self._script else self.default

    def stop(self) -> None:
        for hold in self._holds:
            hold.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = server.take(Recorded("POST", self.path, headers, body))
            if reply.hold is not None:
                reply.hold.wait(timeout=30)
            payload = reply.body
            if isinstance(payload, dict):
                payload = json.dumps(payload)
            data = payload.encode() if isinstance(payload, str) else payload
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


HttpFactory = Callable[..., HttpServer]


@pytest.fixture
def start_http() -> Iterator[HttpFactory]:
    """Start an HTTP server: ``start_http(Reply(...))`` sets the default answer."""
    servers: list[HttpServer] = []

    def start(default: Reply | None = None) -> HttpServer:
        server = HttpServer(default or Reply(200, b"{}"))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def http_server(start_http: HttpFactory) -> HttpServer:
    return start_http()
