"""The application the benchmark workers run: ``chimeway worker --app bench.bench_app:build``.

Configured from the environment: ``CHIMEWAY_DATABASE_URL``, ``BENCH_LATENCY_MS`` (how long
the adapter sleeps per send, simulating a provider; 0 returns at once),
``BENCH_DELIVERY_BATCH_SIZE`` (Chimeway's ``delivery_batch_size``; unset: its default) and
``BENCH_SMTP_PORT`` (when set, the ``smtp_email`` channel of ``bench_two_step_smtp`` sends
through ``SmtpAdapter`` to an SMTP server on 127.0.0.1 at that port). Every channel without
an adapter of its own uses the sleeping adapter (``default_adapter``, given explicitly).
Webhooks signed with :data:`RECEIPTS_SECRET` are taken as provider ``receipts``.
Besides Chimeway's tasks it registers the raw Procrastinate tasks the baselines use, on the
same App, so the baseline runs under exactly the same worker settings:

* ``bench.noop`` (sync, like Chimeway's tasks) and ``bench.noop_async``: do nothing;
* ``bench.stamp(seq)``: records ``time.time()`` at task start into ``bench_stamps``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import time
from typing import Any

from chimeway import (
    Adapter,
    Batch,
    Chimeway,
    DeliveryRequest,
    Notifier,
    OnOutcome,
    OnSignal,
    Recipient,
    Sent,
    Step,
    WaitUntil,
    Workflow,
)
from chimeway.adapters import SmtpAdapter
from chimeway.feedback import StandardWebhooksProvider

RAW_QUEUE = "bench_raw"
RECEIPTS_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNAL = "bench.go"
STAMPS_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_stamps "
    "(kind text NOT NULL, seq int NOT NULL, started double precision NOT NULL)"
)

CONTENT = {
    "in_app": {
        "headline": "Mentioned",
        "body": "You were mentioned",
        "primary_action": {"label": "Open", "url": "/m"},
    },
    "email": {"subject": "Mentioned", "html_body": "<p>Hi</p>", "text_body": "Hi"},
}
CONTENT["smtp_email"] = CONTENT["email"]

TWO_STEP = Workflow(
    "bench_two_step",
    1,
    [
        Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="email")]),
        Step("email", "email"),
    ],
)
TWO_STEP_SMTP = Workflow(
    "bench_two_step_smtp",
    1,
    [
        Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="email")]),
        Step("email", "smtp_email"),
    ],
)
SIGNAL_WAIT = Workflow(
    "bench_signal",
    1,
    [
        Step(
            "notice",
            "in_app",
            [
                WaitUntil(delay=dt.timedelta(days=1), to_step="email"),
                OnSignal(event=SIGNAL, to_step="email"),
            ],
        ),
        Step("email", "email"),
    ],
)
TIMERS = {
    seconds: Workflow(
        f"bench_timer_{seconds}s",
        1,
        [
            Step("notice", "in_app", [WaitUntil(delay=seconds, to_step="email")]),
            Step("email", "email"),
        ],
    )
    for seconds in (1, 2, 3)
}


class _Bench(Notifier):
    """Recipients ``{prefix}-0 .. {prefix}-{n-1}`` from params ``{"n": .., "prefix": ..}``."""

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        prefix = params.get("prefix", "u")
        if params.get("with_email"):  # inline profiles: the SMTP adapter needs an address
            return [
                {"id": f"{prefix}-{i}", "email": f"{prefix}-{i}@bench.test"}
                for i in range(int(params["n"]))
            ]
        return [{"id": f"{prefix}-{i}"} for i in range(int(params["n"]))]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"user": recipient.id}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        """The channel's fixed content; with ``params["body_bytes"]``, an email's HTML body of
        that many bytes (an email as apps send them, not a 9-byte one)."""
        size = int(params.get("body_bytes", 0))
        if size and channel in ("email", "smtp_email"):
            return {**CONTENT[channel], "html_body": html_body(size)}
        return CONTENT[channel]


def html_body(size: int) -> str:
    """``size`` bytes of HTML whose lines differ (as an email's do)."""
    lines = [f"<p>Line {i}: order {i * 7919 % 10007} has shipped.</p>" for i in range(size // 30)]
    return "".join(lines).ljust(size)[:size]


class TwoStep(_Bench):
    key = "bench_two_step"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return TWO_STEP


class TwoStepSmtp(_Bench):
    """Like :class:`TwoStep`, its email sent over SMTP (``BENCH_SMTP_PORT``)."""

    key = "bench_two_step_smtp"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return TWO_STEP_SMTP


class Plain(_Bench):
    """No workflow: one in-app delivery per recipient."""

    key = "bench_plain"
    version = 1


class SignalWait(_Bench):
    key = "bench_signal"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return SIGNAL_WAIT


class Timers(_Bench):
    """Waits of 1, 2 or 3 s (by recipient number, or all ``params["wait"]`` s) between the
    two steps."""

    key = "bench_timer"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        if "wait" in params:
            return TIMERS[int(params["wait"])]
        return TIMERS[int(recipient.id.rsplit("-", 1)[1]) % 3 + 1]


DIGEST_CLOSE_WINDOW = 15  # seconds: bench.digests joins members to these batches first


def _digest_workflow(key: str, window: int | dt.timedelta) -> Workflow:
    return Workflow(key, 1, [Batch(window=window, key="post"), Step("email", "email")])


DIGEST = _digest_workflow("bench_digest", dt.timedelta(hours=1))
DIGEST_CLOSE = _digest_workflow("bench_digest_close", DIGEST_CLOSE_WINDOW)
ONE_STEP = Workflow("bench_one_step", 1, [Step("email", "email")])


class _OneOrMany(_Bench):
    """One recipient ``params["to"]``, or ``{prefix}-0 ..`` as :class:`_Bench`."""

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        if "to" in params:
            return [{"id": params["to"]}]
        return super().recipients(params)

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        return {**CONTENT[channel], "subject": f"{len(items)} new comments"}


class Digest(_OneOrMany):
    """A one-hour batch per (recipient, ``params["post"]``), then one email."""

    key = "bench_digest"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return DIGEST


class DigestClose(_OneOrMany):
    """Like :class:`Digest`, its batches closing :data:`DIGEST_CLOSE_WINDOW` s after they
    open."""

    key = "bench_digest_close"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return DIGEST_CLOSE


class OneStep(_OneOrMany):
    """The same email step without a batch: a run and a delivery per trigger."""

    key = "bench_one_step"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return ONE_STEP


class SleepAdapter:
    """Returns ``Sent`` after ``latency`` seconds (0: at once)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def deliver(self, request: DeliveryRequest) -> Sent:
        if self.latency:
            time.sleep(self.latency)
        return Sent(provider_message_id=f"bench-{request.delivery_id}")


def build_defaults() -> dict[str, Any]:
    """The Chimeway settings the benchmarks do not set themselves, as the library has them."""
    params = inspect.signature(Chimeway).parameters
    return {name: params[name].default for name in ("delivery_batch_size", "send_concurrency")}


def _trace_everything() -> None:
    """``BENCH_OTEL=1``: an SDK tracer provider whose spans are batched to an exporter that
    drops them, and a meter provider read in memory (``bench.telemetry``)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def build(url: str | None = None) -> Chimeway:
    if os.environ.get("BENCH_OTEL") == "1":
        _trace_everything()
    latency = float(os.environ.get("BENCH_LATENCY_MS", "0")) / 1000
    batch = os.environ.get("BENCH_DELIVERY_BATCH_SIZE")
    adapters: dict[str, Adapter] = {}
    smtp_port = os.environ.get("BENCH_SMTP_PORT")
    if smtp_port:
        adapters["smtp_email"] = SmtpAdapter(
            "127.0.0.1", int(smtp_port), security="none", sender="Bench <bench@bench.test>"
        )
    cw = Chimeway(
        url or os.environ["CHIMEWAY_DATABASE_URL"],
        notifiers=[TwoStep, TwoStepSmtp, Plain, SignalWait, Timers, Digest, DigestClose, OneStep],
        adapters=adapters,
        default_adapter=SleepAdapter(latency),
        webhook_providers=[StandardWebhooksProvider(RECEIPTS_SECRET, name="receipts")],
        **({"delivery_batch_size": int(batch)} if batch else {}),
    )
    app = cw.procrastinate

    @app.task(name="bench.noop", queue=RAW_QUEUE)
    def noop(i: int) -> None:
        return None

    @app.task(name="bench.noop_async", queue=RAW_QUEUE)
    async def noop_async(i: int) -> None:
        return None

    @app.task(name="bench.stamp", queue=RAW_QUEUE)
    def stamp(kind: str, seq: int) -> None:
        started = time.time()
        with cw.pool.connection() as conn:
            conn.execute(
                "INSERT INTO bench_stamps (kind, seq, started) VALUES (%s, %s, %s)",
                [kind, seq, started],
            )

    return cw
