"""Calling an adapter: the request it gets, and its answer as an outcome the database can
always store.

Whatever the adapter does (returns, raises, returns garbage, answers with text PostgreSQL
cannot hold), the result is an :class:`Outcome`, never an exception: the other sends of a
chunk must be recorded whatever this one did, and no provider answer may make a send
unrecordable (design §5), since an unrecorded send would be sent again. Provider data is
sanitised (NUL, lone surrogates, absurd nesting or size) and redacted, and what was changed
is kept with the attempt (``provider_response["chimeway_sanitized"]``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from chimeway.adapters import Adapter, DeliveryFailure, DeliveryRequest, RecipientProfile, Sent
from chimeway.engine.senders import Lane
from chimeway.redaction import sanitize_json, sanitize_text
from chimeway.results import Delivery
from chimeway.types import AttemptOutcome, ErrorClass

#: Longest provider message id kept (the column is indexed), and longest error text.
MAX_MESSAGE_ID = 255
MAX_ERROR = 2000
#: The key of a provider response that lists what was changed to store it.
SANITIZED = "chimeway_sanitized"


@dataclass(frozen=True)
class Outcome:
    """An adapter's answer, ready to record."""

    attempt_outcome: AttemptOutcome
    error_class: ErrorClass | None
    error: str | None
    provider_message_id: str | None
    response: dict[str, Any] = field(default_factory=dict)
    #: The provider asked to come back after this many seconds.
    retry_after: float | None = None


def request_for(
    delivery: Delivery,
    attempt_number: int,
    recipient: RecipientProfile | None = None,
    unsubscribe_url: str | None = None,
) -> DeliveryRequest:
    return DeliveryRequest(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        recipient_id=delivery.recipient_id,
        channel=delivery.channel,
        content=delivery.render_data,
        attempt_number=attempt_number,
        recipient=recipient,
        unsubscribe_url=unsubscribe_url,
    )


def call(adapter: Adapter, request: DeliveryRequest) -> Outcome:
    """What ``adapter`` said to ``request``, as an outcome; never raises an ``Exception``."""
    try:
        try:
            result = adapter.deliver(request)
            if isinstance(result, DeliveryFailure):
                raise result
            if not isinstance(result, Sent):
                raise TypeError(f"adapter returned {type(result).__name__}, expected Sent")
        except DeliveryFailure as failure:
            return _failed(failure)
        return _outcome(
            AttemptOutcome.SUCCEEDED, None, None, result.provider_message_id, result.meta
        )
    except Exception as exc:  # an adapter bug, an unclassified error, unreadable meta
        return unknown_failure(exc)


def _failed(failure: DeliveryFailure) -> Outcome:
    attempt = {
        ErrorClass.PERMANENT: AttemptOutcome.REJECTED,
        ErrorClass.BOUNCED: AttemptOutcome.BOUNCED,
    }.get(failure.error_class, AttemptOutcome.FAILED)
    retry_after = getattr(failure, "retry_after", None)
    return _outcome(
        attempt,
        failure.error_class,
        str(failure),
        failure.provider_message_id,
        failure.meta,
        retry_after if isinstance(retry_after, int | float) and retry_after >= 0 else None,
    )


def _outcome(
    attempt: AttemptOutcome,
    error_class: ErrorClass | None,
    error: object,
    message_id: object,
    meta: object,
    retry_after: float | None = None,
) -> Outcome:
    notes: list[str] = []
    error_text = None
    if error is not None:
        error_text, changed = sanitize_text(error, MAX_ERROR, name="error")
        notes += changed
    pmid = None
    if message_id is not None:
        pmid, changed = sanitize_text(message_id, MAX_MESSAGE_ID, name="provider_message_id")
        notes += changed
    response, changed = sanitize_json(meta if isinstance(meta, dict) else {"meta": meta})
    notes += changed
    if notes:
        response = {**response, SANITIZED: notes}
    return Outcome(attempt, error_class, error_text, pmid, response, retry_after)


def unknown_failure(exc: BaseException) -> Outcome:
    """A failure no adapter classified: recorded as ``unknown`` and retried like a
    temporary one."""
    detail = "".join(traceback.format_exception_only(exc)).strip()
    return _outcome(AttemptOutcome.FAILED, ErrorClass.UNKNOWN, detail, None, {})


def timed_out(lane: Lane) -> Outcome:
    """The adapter did not answer within its lane's deadline: an ``unknown`` failure (the
    provider may still have taken it; the delivery's idempotency key lets it tell)."""
    return _outcome(
        AttemptOutcome.FAILED,
        ErrorClass.UNKNOWN,
        f"no answer from the {lane.name} adapter within {lane.timeout:g} s",
        None,
        {},
    )


def never_started(lane: Lane) -> Outcome:
    """Every thread of the adapter's lane is held by a call past its deadline (the provider
    hangs), and the send waited a deadline for one: it was not made. A ``temporary``
    failure of the provider, retried later (it spends an attempt: a provider hung for good
    must not keep its deliveries forever)."""
    return _outcome(
        AttemptOutcome.FAILED,
        ErrorClass.TEMPORARY,
        f"not sent: every thread of the {lane.name} adapter is held by a call past its "
        f"deadline ({lane.timeout:g} s)",
        None,
        {},
    )


def lane_for(adapter: Adapter, *, capacity: int, timeout: float) -> Lane:
    """The adapter's lane: its own ``capacity`` and ``timeout`` when it declares them (the
    built-in adapters do), else the engine's defaults. The engine waits a little longer than
    the adapter's own timeout, which it enforces itself."""
    name = getattr(adapter, "name", None)
    own_capacity = getattr(adapter, "capacity", None)
    own_timeout = getattr(adapter, "timeout", None)
    return Lane(
        key=id(adapter),
        name=name if isinstance(name, str) and name else type(adapter).__name__,
        capacity=int(own_capacity) if _positive(own_capacity) else capacity,
        timeout=own_timeout * 1.5 + 1 if _positive(own_timeout) else timeout,
    )


def _positive(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
