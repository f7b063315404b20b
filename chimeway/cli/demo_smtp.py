"""A tiny SMTP server for ``chimeway demo``: it accepts mail on 127.0.0.1 so the demo sends
real email through :class:`~chimeway.SmtpAdapter` without any network, and refuses the
mailboxes it is told do not exist (``550 5.1.1``), which the adapter reports as a bounce.
Enough of RFC 5321 for smtplib (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT); nothing more."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Collection
from types import TracebackType


class DemoSmtpServer:
    """Runs on a thread until closed; ``received`` counts the messages it accepted."""

    def __init__(self, unknown: Collection[str] = ()) -> None:
        owner = self
        self.unknown = {address.lower() for address in unknown}
        self.received = 0
        self._lock = threading.Lock()

        class Session(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner._session(self)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> DemoSmtpServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _session(self, session: socketserver.StreamRequestHandler) -> None:
        def say(line: str) -> None:
            session.wfile.write(line.encode() + b"\r\n")

        say("220 demo.chimeway ESMTP")
        while line := session.rfile.readline(1002):
            command = line.decode("ascii", "replace").strip()
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                say("250-demo.chimeway")
                say("250 8BITMIME")
            elif verb == "RCPT":
                address = command.partition(":")[2].strip().strip("<>").lower()
                if address in self.unknown:
                    say("550 5.1.1 mailbox unavailable")
                else:
                    say("250 2.1.5 OK")
            elif verb == "DATA":
                say("354 end with <CRLF>.<CRLF>")
                while session.rfile.readline() not in (b".\r\n", b""):
                    pass
                with self._lock:
                    self.received += 1
                say("250 2.0.0 queued")
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                return
            elif verb in ("HELO", "MAIL", "RSET", "NOOP"):
                say("250 OK")
            else:
                say("502 5.5.2 command not implemented")
