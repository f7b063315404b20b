"""``chimeway demo``: an escalation workflow, end to end, in a few seconds.

A mention notifies five people in-app; unless they read it within a few seconds, it
escalates to email, and a bounced email stops the run. A worker runs in this process; one
recipient reads the notice in her inbox (``cw.inbox.mark``, which tracks the read signal).
The emails go through :class:`~chimeway.SmtpAdapter` to a small SMTP server the demo runs on
127.0.0.1 (no network), which does not know one recipient's mailbox: that email bounces.
The recipients' addresses travel inline with them into the recipient directory. The HTTP
service runs on 127.0.0.1 too, and the demo prints the address of a page showing one
recipient's inbox bell (open it, or don't: the demo does not wait for a browser). Each
run's explanation and trace is printed, then a summary.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from chimeway import migrations
from chimeway.adapters import SmtpAdapter
from chimeway.app import Chimeway
from chimeway.cli import reports
from chimeway.cli.demo_smtp import DemoSmtpServer
from chimeway.config import Maintenance
from chimeway.dsl import Step, Stop, WaitUntil, Workflow
from chimeway.notifiers import Notifier, Recipient
from chimeway.results import Triggered
from chimeway.worker import BackgroundWorker, WorkerOptions

READ = "chimeway.notification.read"
RECIPIENTS = ["ada", "grace", "linus", "margaret", "alan"]
READER = "grace"  # reads the in-app notice before the escalation
BOUNCER = "linus"  # whose mailbox does not exist
SHOWN = "ada"  # whose inbox the printed page shows
DOMAIN = "demo.chimeway.test"
WAIT_SECONDS = 3


def escalation(wait_seconds: int) -> Workflow:
    """The notice, then an email unless it was read within ``wait_seconds`` (a workflow of
    its own per wait: a definition never changes under its key and version)."""
    suffix = "" if wait_seconds == WAIT_SECONDS else f"_{wait_seconds}s"
    return Workflow(
        key=f"demo.mention_escalation{suffix}",
        version=1,
        steps=[
            Step(
                "notice",
                channel="in_app",
                progress=[
                    WaitUntil(delay=wait_seconds, to_step="email", cancel_signals=[READ]),
                ],
            ),
            Step("email", channel="email", progress=[Stop(outcome="bounced")]),
        ],
    )


class MentionEscalation(Notifier):
    key = "demo.mention"
    version = 1
    category = "mentions"

    def __init__(self, wait_seconds: int = WAIT_SECONDS) -> None:
        self.escalation = escalation(wait_seconds)

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": user, "email": f"{user}@{DOMAIN}"} for user in params["users"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"author": params["author"], "document": params["document"]}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        text = f"{params['author']} mentioned you in {params['document']}"
        if channel == "email":
            return {"subject": text, "html_body": f"<p>{text}</p>", "text_body": text}
        return {
            "headline": "New mention",
            "body": text,
            "primary_action": {"label": "Open", "url": f"/docs/{params['document']}"},
        }

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return self.escalation


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo timed out waiting for {what}")
        time.sleep(0.05)


def run_demo(
    url: str,
    out: TextIO,
    note: Callable[[str], None],
    *,
    wait_seconds: int = WAIT_SECONDS,
    keep_serving: bool = False,
) -> int:
    started = time.monotonic()
    note("migrating the database")
    migrations.migrate(url, report=note)
    tenant = f"demo-{uuid.uuid4().hex[:6]}"
    mail = DemoSmtpServer(unknown=[f"{BOUNCER}@{DOMAIN}"]).__enter__()
    smtp = SmtpAdapter("127.0.0.1", mail.port, security="none", sender=f"Demo <demo@{DOMAIN}>")
    cw = Chimeway(
        url,
        notifiers=[MentionEscalation(wait_seconds)],
        # in_app needs no adapter: the notices go to each recipient's inbox.
        adapters={"email": smtp},
        maintenance=Maintenance(sweep_cron="*/10 * * * * *"),
        secret=secrets.token_urlsafe(32),
    )
    web = BackgroundServer(cw.asgi())
    try:
        note(f"a local SMTP server takes the emails on 127.0.0.1:{mail.port}")
        web.start()
        page = f"{web.url}/v1/inbox/example#token={cw.inbox.token(tenant, SHOWN)}"
        note(f"{SHOWN}'s inbox, live while the demo runs: {page}")
        with BackgroundWorker(cw, WorkerOptions(concurrency=4, poll_interval=0.1)):
            note(f"triggering a mention for {len(RECIPIENTS)} recipients in tenant {tenant}")
            result = cw.trigger(
                "demo.mention",
                {"users": RECIPIENTS, "author": "Barbara", "document": "Q3 plan"},
                tenant_id=tenant,
                idempotency_key=f"mention-{uuid.uuid4()}",
            )
            assert isinstance(result, Triggered)
            runs = dict(zip(RECIPIENTS, result.run_ids, strict=True))
            notices = dict(zip(RECIPIENTS, result.notification_ids, strict=True))

            def state(name: str) -> str:
                return str(cw.workflows.explain(tenant, runs[name]).state)

            note("delivering the in-app notices")
            _wait_for("the notices", lambda: state(READER) == "waiting", 15)
            note(f"{READER} reads her notice in her inbox (the signal {READ} follows)")
            cw.inbox.mark(tenant, READER, [notices[READER]], "read")
            note(f"waiting {wait_seconds} s for the others to escalate to email")
            _wait_for(
                "every run to finish",
                lambda: all(state(n) in ("completed", "stopped") for n in RECIPIENTS),
                wait_seconds + 15,
            )
        _print(cw, tenant, runs, out, time.monotonic() - started)
        out.write(f"The SMTP server accepted {mail.received} email(s).\n")
        out.flush()
        if keep_serving:
            _stop_on_signals()
            note(f"{SHOWN}'s inbox stays up at {page} ; press Ctrl-C to stop")
            web.wait()
    finally:
        web.stop()
        cw.close()
        smtp.close()
        mail.__exit__(None, None, None)
    return 0


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT), or a service manager's SIGTERM, stops the page that stays up, even
    when the demo was started with SIGINT ignored (a background job of a non-interactive
    shell passes that on, and Python then raises no ``KeyboardInterrupt``)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


class BackgroundServer:
    """``chimeway serve``'s HTTP service on a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="demo-http", daemon=True)
        self.url = ""

    def start(self) -> None:
        self._thread.start()
        _wait_for("the HTTP service", lambda: self._server.started, 15)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def wait(self) -> None:
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def _print(
    cw: Chimeway, tenant: str, runs: dict[str, uuid.UUID], out: TextIO, elapsed: float
) -> None:
    states: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for name, run_id in runs.items():
        explained = cw.workflows.explain(tenant, run_id)
        states[str(explained.state)] = states.get(str(explained.state), 0) + 1
        out.write(f"\n== {name} ==\n")
        reports.run_explanation(explained, out)
        out.write("\n")
        reports.trace(cw.workflows.list_traces(tenant, run_id), out)
        for delivery_id in cw.workflows.run_deliveries(tenant, run_id):
            explanation = cw.explain_delivery(tenant, delivery_id)
            outcome = (
                "sent"
                if explanation.sent
                else str(explanation.suppression_reason or explanation.status)
            )
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            out.write(f"  {explanation.channel}: {explanation.why}\n")
    run_summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    delivery_summary = ", ".join(f"{n} {s}" for s, n in sorted(outcomes.items()))
    out.write(
        f"\nSummary: {len(runs)} runs ({run_summary}); {sum(outcomes.values())} deliveries "
        f"({delivery_summary}); {elapsed:.1f} s.\n"
    )
