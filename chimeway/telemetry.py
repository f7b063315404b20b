"""OpenTelemetry spans and metrics, when the ``otel`` extra is installed and the application
has set a tracer (or meter) provider; otherwise every call here is one cheap check and
nothing else (the send path is hot).

Spans carry ids and names only (tenant, event, delivery, run, channel, notification,
outcome), never an address, a payload value or a secret. The trace context crosses the
queue as a W3C ``traceparent`` stored with the event (design §1.1: job arguments stay ids),
so a send in a worker is part of the trace of the call that triggered it. The span names,
attributes and metrics are listed in ``docs/observability.md``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

try:  # the ``otel`` extra
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    _trace = None  # type: ignore[assignment]
    _metrics = None  # type: ignore[assignment]
    _context = None  # type: ignore[assignment]
    INSTALLED = False
else:
    INSTALLED = True

#: The instrumentation scope of every span and instrument.
SCOPE = "chimeway"

Attribute = str | int | float | bool | None

_propagator = TraceContextTextMapPropagator() if INSTALLED else None
_tracer_for: tuple[object, Any] | None = None
_instruments: dict[tuple[int, str], Any] = {}


class Span:
    """A started span; :meth:`set` adds attributes (``None`` values are left out)."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, **attributes: Attribute | uuid.UUID) -> None:
        if self._span is not None:
            self._span.set_attributes(_clean(attributes))

    @property
    def recording(self) -> bool:
        return self._span is not None


#: What :func:`span` yields when nothing traces.
NO_SPAN = Span(None)


def tracing() -> bool:
    """Whether spans are recorded: the extra is installed and a real tracer provider is set
    (the API alone records nothing, so then Chimeway makes no span at all). While none is
    set, this reads one module attribute (the hot path calls it for every send)."""
    if not INSTALLED:
        return False
    if getattr(_trace, "_TRACER_PROVIDER", True) is None and not _TRACER_FROM_ENV:
        return False
    provider = _trace.get_tracer_provider()
    return not isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)


#: Whether the API loads a provider itself, named by its variables (then it must be asked;
#: read once: looking a variable up costs microseconds).
_TRACER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_METER_FROM_ENV = "OTEL_PYTHON_METER_PROVIDER" in os.environ


def _tracer() -> Any:
    global _tracer_for  # noqa: PLW0603 (one cached tracer per provider)
    provider = _trace.get_tracer_provider()
    cached = _tracer_for
    if cached is None or cached[0] is not provider:
        cached = (provider, provider.get_tracer(SCOPE))
        _tracer_for = cached
    return cached[1]


@contextmanager
def _started(
    name: str, parent: Parent, links: Sequence[str], attributes: Mapping[str, Any]
) -> Iterator[Span]:
    assert _propagator is not None
    context = parent.context if isinstance(parent, Here) else None
    if isinstance(parent, str) and parent:
        context = _propagator.extract({"traceparent": parent})
    span_links = [
        _trace.Link(span_context)
        for link in links
        if (span_context := _span_context(link)) is not None
    ]
    with _tracer().start_as_current_span(
        name, context=context, links=span_links, attributes=_clean(attributes)
    ) as started:
        yield Span(started)


def span(
    name: str,
    *,
    parent: Parent = None,
    links: Sequence[str] = (),
    **attributes: Attribute | uuid.UUID,
) -> Any:
    """A context manager: the span ``name``, a child of the current span or, given a
    ``traceparent`` as ``parent``, of that remote one (or of a :func:`here` taken on another
    thread); ``links`` are other traceparents it
    relates to (the other triggers of a batch). Yields a :class:`Span`."""
    if not tracing():
        return _NO_SPAN_CONTEXT
    return _started(name, parent, links, attributes)


class _NoSpanContext:
    __slots__ = ()

    def __enter__(self) -> Span:
        return NO_SPAN

    def __exit__(self, *_: object) -> None:
        return None


_NO_SPAN_CONTEXT = _NoSpanContext()


class Here:
    """The current trace context, to continue on another thread (:func:`here`)."""

    __slots__ = ("context", "traceparent")

    def __init__(self, context: Any, traceparent: str | None) -> None:
        self.context = context
        self.traceparent = traceparent


#: What a span may continue: a W3C ``traceparent``, a :class:`Here`, or nothing.
Parent = str | Here | None


def here() -> Here | None:
    """The current span's context (``None`` when nothing traces): a child span started on
    another thread with ``parent=`` it needs no traceparent parsed."""
    if not tracing():
        return None
    return Here(_context.get_current(), traceparent())


def traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` (``None`` when nothing traces)."""
    if not tracing():
        return None
    assert _propagator is not None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def trace_id(parent: str | None) -> str | None:
    """The trace id of a ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    if not parent:
        return None
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 else None


def _span_context(parent: str) -> Any:
    assert _propagator is not None
    context = _propagator.extract({"traceparent": parent})
    span_context = _trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        f"chimeway.{key}": str(value) if isinstance(value, uuid.UUID) else value
        for key, value in attributes.items()
        if value is not None
    }


# -- metrics -----------------------------------------------------------------------------

#: Instrument name -> (kind, unit, description).
INSTRUMENTS: dict[str, tuple[str, str, str]] = {
    "chimeway.triggers": ("counter", "{event}", "Events triggered (duplicates included)."),
    "chimeway.deliveries.planned": ("counter", "{delivery}", "Deliveries planned."),
    "chimeway.sends": ("counter", "{attempt}", "Adapter calls, by channel and outcome."),
    "chimeway.send.duration": ("histogram", "s", "How long an adapter call took."),
    "chimeway.signals": ("counter", "{signal}", "Signals tracked."),
    "chimeway.webhook.events": ("counter", "{event}", "Provider webhook events received."),
}


def metering() -> bool:
    """Whether metrics are recorded: the extra is installed and a meter provider is set."""
    if not INSTALLED:
        return False
    internal = getattr(_metrics, "_internal", None)
    if getattr(internal, "_METER_PROVIDER", True) is None and not _METER_FROM_ENV:
        return False
    provider = _metrics.get_meter_provider()
    return not isinstance(provider, _metrics.NoOpMeterProvider) and (
        type(provider).__name__ != "_ProxyMeterProvider"
    )


def _instrument(name: str) -> Any:
    provider = _metrics.get_meter_provider()
    key = (id(provider), name)
    instrument = _instruments.get(key)
    if instrument is None:
        kind, unit, description = INSTRUMENTS[name]
        meter = provider.get_meter(SCOPE)
        create = meter.create_histogram if kind == "histogram" else meter.create_counter
        instrument = _instruments[key] = create(name, unit=unit, description=description)
    return instrument


def add(name: str, amount: int = 1, **attributes: Attribute) -> None:
    """Add to the counter ``name`` (one of :data:`INSTRUMENTS`)."""
    if amount and metering():
        _instrument(name).add(amount, _clean(attributes))


def observe(name: str, value: float, **attributes: Attribute) -> None:
    """Record ``value`` in the histogram ``name`` (one of :data:`INSTRUMENTS`)."""
    if metering():
        _instrument(name).record(value, _clean(attributes))
