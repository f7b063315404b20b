"""OpenTelemetry (chimeway.telemetry): the spans of a trigger, its plan, the worker's job, the
sends, their record and the run's progress form one trace, continued across the queue from
the trigger's caller; spans carry ids, never an address or a payload value; metrics go
through the same API. A real worker on a real database, spans in the SDK's in-memory
exporter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chimeway import Chimeway, OnOutcome, Recipient, Step, Triggered, Workflow, telemetry
from chimeway.testing import drain
from chimeway.worker import BackgroundWorker
from tests.acceptance.conftest import wait_until
from tests.integration.conftest import Recorders
from tests.integration.notifiers import WithWorkflow
from tests.integration.webhook_support import PROVIDER, receipt

ADDRESS = "ada@example.com"
SECRET = "order-4711-private"

TWO_STEPS = Workflow(
    key="traced",
    version=1,
    steps=[
        Step("notice", channel="email", progress=[OnOutcome(outcome="delivered", to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


class Traced(WithWorkflow):
    """Recipients with an address; a payload value that must stay out of every span."""

    key = "traced"

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": uid, "email": ADDRESS, "phone": "+15550100"} for uid in params["users"]]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        body = f"Your {params['order']}"
        if channel == "email":
            return {"subject": body, "html_body": f"<p>{body}</p>", "text_body": body}
        return {"text_body": body}


_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()


def _install() -> None:
    """The process's tracer and meter providers are set once (the OpenTelemetry API refuses
    a second); the exporter is added to whichever SDK provider is there."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    if not telemetry.metering():
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _install()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def by_name(found: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for s in found:
        named.setdefault(s.name, []).append(s)
    return named


def test_a_trigger_and_its_sends_in_a_worker_form_one_trace(
    cw: Chimeway, adapters: Recorders, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("the caller's request") as caller:
        result = cw.trigger(
            Traced(TWO_STEPS),
            {"users": ["u1", "u2"], "order": SECRET},
            tenant_id="acme",
            idempotency_key="k1",
        )
    assert isinstance(result, Triggered)
    trace_id = caller.get_span_context().trace_id

    with BackgroundWorker(cw):
        wait_until(lambda: len(adapters["sms"].sent) == 2, timeout=30)
        # Both runs finished their second step: its record (and progress) span ended.
        wait_until(lambda: len(finished(spans, "chimeway.send")) == 4, timeout=30)
        wait_until(lambda: len(finished(spans, "chimeway.deliver")) >= 2, timeout=30)

    ours = [s for s in spans.get_finished_spans() if s.name.startswith("chimeway.")]
    named = by_name(ours)
    assert {"chimeway.trigger", "chimeway.plan", "chimeway.deliver", "chimeway.send"} <= set(
        named
    ), sorted(named)
    assert {"chimeway.record", "chimeway.progress"} <= set(named), sorted(named)
    # ONE trace, from the caller's span to every send, across the queue.
    assert {s.context.trace_id for s in ours} == {trace_id}
    [trigger] = named["chimeway.trigger"]
    assert trigger.parent is not None
    assert trigger.parent.span_id == caller.get_span_context().span_id
    assert trigger.attributes is not None
    assert trigger.attributes["chimeway.event_id"] == str(result.event_id)
    assert trigger.attributes["chimeway.tenant_id"] == "acme"
    # The plan is the trigger's child; the first jobs continue the trigger's span.
    ids = {s.context.span_id: s for s in ours}
    for plan in named["chimeway.plan"]:
        assert plan.parent is not None and plan.parent.span_id in ids
    first_jobs = [
        s
        for s in named["chimeway.deliver"]
        if s.parent is not None and s.parent.span_id == trigger.context.span_id
    ]
    assert first_jobs, "no deliver job is a child of the trigger"
    sends = named["chimeway.send"]
    assert {s.attributes["chimeway.channel"] for s in sends if s.attributes} == {"email", "sms"}
    assert {s.attributes["chimeway.delivery_id"] for s in sends if s.attributes} >= {
        str(d) for d in result.delivery_ids
    }
    jobs = {s.context.span_id for s in named["chimeway.deliver"]}
    for send in sends:
        # Each send is a child of its job's span (the job continued the send's trigger).
        assert send.parent is not None and send.parent.span_id in jobs
        assert send.attributes is not None
        assert send.attributes["chimeway.outcome"] == "succeeded"
    # Ids and names only: no address, no payload value in any span.
    for s in ours:
        for value in (s.attributes or {}).values():
            assert ADDRESS not in str(value) and SECRET not in str(value), (s.name, value)
        assert ADDRESS not in s.name and SECRET not in s.name

    # The job arguments are ids only; the trace context is the event's.
    with psycopg.connect(cw.database_url) as conn:
        row = conn.execute(
            "SELECT traceparent FROM chimeway_events WHERE id = %s", [result.event_id]
        ).fetchone()
        assert row is not None and telemetry.trace_id(row[0]) == format(trace_id, "032x")
        args = conn.execute("SELECT args::text FROM procrastinate_jobs").fetchall()
        assert all("traceparent" not in a and SECRET not in a for (a,) in args)


def test_metrics_count_triggers_plans_and_sends(
    make_cw: Callable[..., Chimeway], adapters: Recorders, spans: InMemorySpanExporter
) -> None:
    cw = make_cw()

    def points() -> dict[str, float]:
        data = _READER.get_metrics_data()
        totals: dict[str, float] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = getattr(point, "count", 0)
                        totals[metric.name] = totals.get(metric.name, 0) + value
        return totals

    before = points()
    cw.trigger(
        Traced(TWO_STEPS), {"users": ["m1"], "order": SECRET}, tenant_id="t", idempotency_key="m"
    )
    drain(cw)
    after = points()
    assert after["chimeway.triggers"] - before.get("chimeway.triggers", 0) == 1
    assert after["chimeway.deliveries.planned"] - before.get("chimeway.deliveries.planned", 0) == 2
    assert after["chimeway.sends"] - before.get("chimeway.sends", 0) == 2
    assert after["chimeway.send.duration"] - before.get("chimeway.send.duration", 0) == 2


def test_a_trigger_without_a_current_span_starts_a_trace(
    cw: Chimeway, spans: InMemorySpanExporter
) -> None:
    result = cw.trigger(
        Traced(TWO_STEPS), {"users": ["u"], "order": "x"}, tenant_id="t", idempotency_key="n"
    )
    assert isinstance(result, Triggered)
    with psycopg.connect(cw.database_url) as conn:
        row = conn.execute(
            "SELECT traceparent FROM chimeway_events WHERE id = %s", [result.event_id]
        ).fetchone()
    # The trigger's own span is the root of a new trace: its context is stored.
    [trigger] = finished(spans, "chimeway.trigger")
    assert trigger.parent is None
    assert row is not None
    assert telemetry.trace_id(row[0]) == format(trigger.context.trace_id, "032x")


def test_signals_and_webhooks_have_their_spans(
    make_cw: Callable[..., Chimeway], adapters: Recorders, spans: InMemorySpanExporter
) -> None:
    cw = make_cw(webhook_providers=[PROVIDER])
    result = cw.trigger(
        Traced(TWO_STEPS), {"users": ["w1"], "order": SECRET}, tenant_id="t", idempotency_key="w"
    )
    assert isinstance(result, Triggered)
    drain(cw)
    cw.track_signal("t", "w1", "order.shipped", {"order": SECRET})
    body, headers = receipt("delivered", result.delivery_ids[0])
    cw.webhooks.process("receipts", body, headers)
    drain(cw)
    named = by_name(spans.get_finished_spans())
    [signal] = named["chimeway.signal"]
    [route] = named["chimeway.signal.route"]
    [webhook] = named["chimeway.webhook"]
    [processed] = named["chimeway.webhook.process"]
    assert signal.attributes is not None and route.attributes is not None
    assert signal.attributes["chimeway.event_name"] == "order.shipped"
    assert route.attributes["chimeway.signals"] == 1
    assert webhook.attributes is not None and processed.attributes is not None
    assert webhook.attributes["chimeway.provider"] == "receipts"
    assert webhook.attributes["chimeway.events"] == 1
    assert processed.attributes["chimeway.delivery_id"] == str(result.delivery_ids[0])
    for s in (signal, route, webhook, processed):
        assert SECRET not in str(dict(s.attributes or {}))
