"""Provider feedback (design §12): a provider's webhook becomes ingress rows, and each row,
processed by its ``process_webhook`` job, becomes evidence and decisions.

:func:`process` verifies the webhook on its raw body, parses it into events, and writes one
ingress row per new event with its job, in one statement (one transaction); an event the
provider sent before is inert, and a request that is not authentic or not understood writes
nothing. Without a caller's connection, the statement runs in autocommit mode (one round
trip), and webhooks arriving at once share that statement and its commit (group commit,
:mod:`chimeway.engine.batching`): one commit for many single-event requests.
:func:`process_async` does the same from asyncio code (the HTTP app), through a
:class:`WebhookWriter`: an asyncio pool and group commit without threads.
:func:`process_ingress` then, in one transaction per row (lock order: the run, then the
delivery), finds the delivery the event is about and acts on it:

* ``delivered`` confirms the send: the row is the evidence, shown by ``explain_delivery``;
* ``bounced`` cancels the delivery (``bounced``), even after it ``succeeded``; ``failed``
  cancels it (``permanent_failure``) when the provider says it is permanent, else moves it
  to ``failed`` and schedules a retry on its retry policy (or cancels it,
  ``retries_exhausted``, when no attempt is left). A run still on that step is decided
  again with the new outcome, so ``OnOutcome("bounced")`` fires; after the run moved on,
  the feedback is recorded and explained only;
* ``opened`` / ``clicked`` become the signals ``chimeway.notification.opened`` /
  ``clicked`` of the recipient, which can end a wait;
* ``complained`` / ``unsubscribed`` turn the delivery's channel off for that recipient, for
  the notification's category (else its workflow): the preference row the message's own
  unsubscribe link writes (:func:`chimeway.policy.unsubscribe_scope`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread
import psycopg
from psycopg_pool import AsyncConnectionPool

from chimeway import telemetry
from chimeway.db import Conn
from chimeway.engine import connections, signals
from chimeway.engine.context import Engine
from chimeway.engine.progression import progress_on_feedback
from chimeway.errors import DatabaseUnavailable, InvalidArgument, SchemaNotReady, translated
from chimeway.feedback import FeedbackEvent
from chimeway.policy import unsubscribe_scope
from chimeway.results import Delivery, FeedbackProcessed, ProgressResult, WebhookResult
from chimeway.store import clock, deliveries, preferences, runs, webhooks
from chimeway.store.webhooks import Ingress
from chimeway.types import DeliveryReason, DeliveryStatus, FeedbackStatus, IngressState

logger = logging.getLogger(__name__)

S = DeliveryStatus
K = FeedbackStatus
#: What a provider's report of failure may overturn: a send it accepted, one still being
#: recorded, or one already retrying.
SENT = (S.DISPATCHED, S.SUCCEEDED, S.FAILED)
#: A body up to this size is verified and parsed on the event loop (a receipt takes tens of
#: microseconds); a larger one on a worker thread.
INLINE_BODY_BYTES = 64_000
SIGNALS = {K.OPENED: "chimeway.notification.opened", K.CLICKED: "chimeway.notification.clicked"}


def process(
    engine: Engine,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None = None,
    conn: Conn | None = None,
) -> WebhookResult:
    """Verify, parse and store one webhook request (see the module)."""
    with telemetry.span("chimeway.webhook", provider=provider) as span:
        events = verified(engine, provider, body, headers, url)
        if not events:
            result = WebhookResult(provider, 0)
        elif conn is None:  # concurrent webhooks share a commit (group commit)
            stored = engine.webhook_ingress.submit(
                events, lambda batch: _store(engine, None, batch)
            )
            result = _stored(provider, events, stored)
        else:
            [stored] = _store(engine, conn, [events])
            result = _stored(provider, events, stored)
        span.set(events=result.events, duplicates=result.duplicates)
    telemetry.add("chimeway.webhook.events", result.events, provider=provider)
    return result


async def process_async(
    engine: Engine,
    writer: WebhookWriter,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None = None,
) -> WebhookResult:
    """:func:`process` for asyncio code (the HTTP app): the events are stored by
    ``writer``, which shares one statement, and its commit, among the webhooks arriving
    at once. Returns once they are committed; a large body is verified and parsed on a
    worker thread, so the event loop is never held for long."""
    with telemetry.span("chimeway.webhook", provider=provider) as span:
        if len(body) > INLINE_BODY_BYTES:
            events = await anyio.to_thread.run_sync(
                lambda: verified(engine, provider, body, headers, url)
            )
        else:
            events = verified(engine, provider, body, headers, url)
        if events:
            result = _stored(provider, events, await writer.store(events))
        else:
            result = WebhookResult(provider, 0)
        span.set(events=result.events, duplicates=result.duplicates)
    telemetry.add("chimeway.webhook.events", result.events, provider=provider)
    return result


def verified(
    engine: Engine, provider: str, body: bytes, headers: Mapping[str, str], url: str | None
) -> list[FeedbackEvent]:
    """The events of a webhook, verified on its raw body before anything parses it."""
    verifier = engine.feedback_provider(provider)
    if not isinstance(body, bytes | bytearray):
        raise InvalidArgument(f"body must be the raw request bytes, got {type(body).__name__}")
    if not isinstance(headers, Mapping):
        raise InvalidArgument(f"headers must be a mapping, got {type(headers).__name__}")
    raw = bytes(body)
    verifier.verify(raw, headers, url)
    return [dataclasses.replace(e, provider=verifier.name) for e in verifier.parse(raw, headers)]


def _stored(provider: str, events: list[FeedbackEvent], stored: list[uuid.UUID]) -> WebhookResult:
    logger.info(
        "webhook stored",
        extra={
            "action": "webhook.stored",
            "provider": provider,
            "events": len(events),
            "stored": len(stored),
        },
    )
    return WebhookResult(provider, len(events), stored, len(events) - len(stored))


def _store(
    engine: Engine, conn: Conn | None, webhooks_events: Sequence[list[FeedbackEvent]]
) -> list[list[uuid.UUID]]:
    """Store the events of one or more webhooks with their jobs, in one statement; for
    each webhook, the ids of its rows that are new."""
    given = [[(uuid.uuid4(), e) for e in events] for events in webhooks_events]
    flat = [pair for pairs in given for pair in pairs]
    if conn is None:
        new = _insert_alone(engine, flat)
    else:
        with engine.transaction(conn) as tx:
            new = webhooks.insert(tx, flat)
    return [[i for i, _ in pairs if i in new] for pairs in given]


def _insert_alone(engine: Engine, pairs: list[tuple[uuid.UUID, FeedbackEvent]]) -> set[uuid.UUID]:
    """The statement alone in autocommit mode on a pool connection: rows, jobs and commit
    in one round trip (BEGIN and COMMIT of their own would be two more). The connection
    goes back to the pool as it came (not in autocommit), or closed if it cannot."""
    with translated(), engine.pool.connection() as own:
        own.autocommit = True
        try:
            return webhooks.insert(own, pairs)
        finally:
            try:
                own.autocommit = False
            except psycopg.Error:
                own.close()  # broken: the pool drops it rather than hand it out as is


class WebhookWriter:
    """Stores verified webhooks' events from asyncio code, with group commit.

    A webhook arriving while no write runs is written at once, alone: no wait is added at
    low load. Webhooks arriving while ``flushers`` writes run queue up, and the next write
    takes all of them (up to ``max_batch`` webhooks; with ``linger`` > 0 it first waits up
    to that many seconds for the batch to fill). A write is one statement on an autocommit
    connection of its own asyncio pool (rows, their jobs and the commit: one round trip),
    so no thread is involved. Each caller returns once the statement that holds its events
    has committed, or raises what that statement raised: every webhook of a failed batch
    fails, and nothing of the batch is written. Bound to the event loop that first uses it;
    :meth:`close` it.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 500,
        linger: float = 0.0,
        flushers: int = 2,
    ) -> None:
        if max_batch < 1 or flushers < 1 or linger < 0:
            raise InvalidArgument("max_batch and flushers must be >= 1, linger >= 0")
        self.engine = engine
        self.max_batch = max_batch
        self.linger = linger
        self.flushers = flushers
        self._queue: list[tuple[list[FeedbackEvent], asyncio.Future[list[uuid.UUID]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing = 0  # counted in _flush itself: a done callback would run too late
        self._full: asyncio.Event | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opened: asyncio.Future[AsyncConnectionPool[Any]] | None = None

    async def store(self, events: list[FeedbackEvent]) -> list[uuid.UUID]:
        """Write ``events`` (of one webhook) with their jobs, possibly together with other
        webhooks' events; the ids of the rows that are new, once committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[uuid.UUID]] = loop.create_future()
        self._queue.append((events, done))
        if self._full is None:
            self._full = asyncio.Event()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        if self._flushing < self.flushers:
            self._flushing += 1
            task = loop.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await done
        except Exception as exc:  # one exception object, raised in every waiting request
            raise _own(exc) from exc

    async def _flush(self) -> None:
        try:
            await self._drain()
        finally:
            # No await between the drain's last look at the queue and this: a webhook
            # queued after that look finds a flusher slot free and starts one.
            self._flushing -= 1

    async def _drain(self) -> None:
        while self._queue:
            if self.linger and len(self._queue) < self.max_batch and self._full is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.linger)
                self._full.clear()
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            if not batch:  # another flusher took them while this one waited
                break
            try:
                stored = await self._write([events for events, _ in batch])
            except (DatabaseUnavailable, SchemaNotReady) as exc:  # all retried later
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except Exception as exc:
                if len(batch) == 1:
                    _, done = batch[0]
                    if not done.done():
                        done.set_exception(exc)
                    continue
                # One webhook the database refuses must not fail the others: each alone.
                stored = await self._one_by_one(batch)
            except BaseException:  # cancelled (the loop is closing): so are its requests
                for _, done in batch:
                    done.cancel()
                raise
            for (_, done), ids in zip(batch, stored, strict=True):
                if not done.done():  # its request may have been cancelled meanwhile
                    done.set_result(ids)

    async def _one_by_one(
        self, batch: Sequence[tuple[list[FeedbackEvent], asyncio.Future[list[uuid.UUID]]]]
    ) -> list[list[uuid.UUID]]:
        """Write each webhook of a batch that failed in a statement of its own; one that
        fails again gets its error (its ids: none)."""
        stored: list[list[uuid.UUID]] = []
        for events, done in batch:
            try:
                [ids] = await self._write([events])
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                ids = []
            stored.append(ids)
        return stored

    async def _write(self, batch: Sequence[list[FeedbackEvent]]) -> list[list[uuid.UUID]]:
        given = [[(uuid.uuid4(), e) for e in events] for events in batch]
        with translated():
            pool = await self._connections()
            async with pool.connection() as conn:
                new = await webhooks.insert_async(conn, [p for pairs in given for p in pairs])
        return [[i for i, _ in pairs if i in new] for pairs in given]

    async def _connections(self) -> AsyncConnectionPool[Any]:
        if self._opened is None:
            self._opened = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._opened)

    async def _open(self) -> AsyncConnectionPool[Any]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.engine.database_url,
            min_size=0,
            max_size=self.flushers,
            open=False,
            name="chimeway-webhooks",
            timeout=self.engine.pool_timeout,  # the engine's own pools' wait
            kwargs={"autocommit": True},
            # Connections broken by a server restart are replaced, not handed out.
            check=connections.AsyncIdleCheck(),
        )
        await pool.open()
        self._pool = pool
        return pool

    async def close(self) -> None:
        """Close the connections (after the requests in flight were answered)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
        self._pool = self._opened = None


def _own(error: Exception) -> Exception:
    """A new exception like ``error`` for one request of a failed batch: one instance
    raised in several tasks would share (and overwrite) one traceback."""
    try:
        return type(error)(*error.args)
    except Exception:
        return RuntimeError(f"the shared write failed: {error!r}")


def process_ingress(engine: Engine, conn: Conn, ingress_id: uuid.UUID) -> FeedbackProcessed:
    """Act on one ingress row, in the caller's transaction; processing twice does nothing."""
    row = webhooks.lock(conn, ingress_id)
    if row is None:
        return FeedbackProcessed(ingress_id, "ignored", detail="missing")
    if row.ingress_state != IngressState.QUEUED:
        return FeedbackProcessed(
            ingress_id, row.outcome or str(row.ingress_state), row.delivery_id, "already processed"
        )
    found = webhooks.target(conn, row.delivery_ref, row.provider_message_id)
    if found is None:
        why = "delivery_not_found" if row.delivery_ref else "provider_message_id_not_found"
        webhooks.finish(conn, ingress_id, IngressState.IGNORED, ignored_reason=why)
        _log(row, "webhook.ignored", None, reason=why)
        return FeedbackProcessed(ingress_id, "ignored", detail=why)
    # Lock order: the run, then the delivery.
    run = runs.lock_run(conn, found.workflow_run_id) if found.workflow_run_id else None
    delivery = deliveries.lock_many(conn, [found.id])[found.id]
    outcome, moved = _act(engine, conn, row, delivery)
    run_result: ProgressResult | None = None
    if moved is not None and run is not None:
        run_result = progress_on_feedback(engine, conn, run, moved, _context(row, moved))
    webhooks.finish(
        conn, ingress_id, IngressState.PROCESSED, delivery_id=delivery.id, outcome=outcome
    )
    _log(row, "webhook.processed", delivery, outcome=outcome)
    return FeedbackProcessed(ingress_id, outcome, delivery.id, run_result=run_result)


def process_ingress_now(engine: Engine, ingress_id: uuid.UUID) -> FeedbackProcessed:
    """:func:`process_ingress` in a transaction of its own (what the job does)."""
    with (
        telemetry.span("chimeway.webhook.process", ingress_id=ingress_id) as span,
        engine.pool.connection() as conn,
        conn.transaction(),
    ):
        processed = process_ingress(engine, conn, ingress_id)
        span.set(outcome=processed.outcome, delivery_id=processed.delivery_id)
        return processed


def _act(
    engine: Engine, conn: Conn, row: Ingress, delivery: Delivery
) -> tuple[str, Delivery | None]:
    """Do what the event says to the (locked) delivery: the outcome's name, and the
    delivery as moved when its status changed."""
    kind = FeedbackStatus(row.kind)
    if kind == K.DELIVERED:
        return "confirmed", None
    if kind in SIGNALS:
        signals.track_signal(
            engine,
            delivery.tenant_id,
            delivery.recipient_id,
            SIGNALS[kind],
            {"delivery_id": str(delivery.id), "channel": delivery.channel},
            idempotency_key=f"feedback:{row.id}",
            conn=conn,
        )
        return "signal_tracked", None
    if kind in (K.COMPLAINED, K.UNSUBSCRIBED):
        # The rule the message's own unsubscribe link would have set.
        scope = unsubscribe_scope(
            delivery.channel,
            category=delivery.category or webhooks.category(conn, delivery.id),
            workflow=delivery.workflow_key,
        )
        preferences.set_rule(
            conn,
            tenant_id=delivery.tenant_id,
            recipient_id=delivery.recipient_id,
            channel=scope.channel,
            category=scope.category,
            workflow=scope.workflow,
            enabled=False,
            source=f"{kind}:{row.provider}",
            set_at=row.occurred_at,
        )
        return "opted_out", None
    if delivery.status not in SENT:
        return "unchanged", None
    if kind == K.BOUNCED or row.permanent:
        reason = DeliveryReason.BOUNCED if kind == K.BOUNCED else DeliveryReason.PERMANENT_FAILURE
        moved = _move(conn, row, delivery, S.CANCELLED, reason)
        return f"cancelled_{reason}", moved
    if delivery.status == S.FAILED:  # already retrying: the retry ladder goes on
        return "unchanged", None
    return _fail(engine, conn, row, delivery)


def _fail(
    engine: Engine, conn: Conn, row: Ingress, delivery: Delivery
) -> tuple[str, Delivery | None]:
    """A temporary failure after the send: retried like a failed attempt, or cancelled when
    the delivery has no attempt left."""
    made = len(deliveries.attempts(conn, delivery.id))
    if made >= delivery.max_attempts:
        _move(conn, row, delivery, S.FAILED, None)
        moved = _move(conn, row, delivery, S.CANCELLED, DeliveryReason.RETRIES_EXHAUSTED)
        return "cancelled_retries_exhausted", moved
    retry_at = clock.now(conn) + engine.retry_policy(delivery.channel).delay(max(made, 1))
    moved = _move(conn, row, delivery, S.FAILED, None, retry_at)
    engine.deferrer.deliver_if_not_queued(conn, delivery.id, schedule_at=retry_at)
    return "failed", moved


def _move(
    conn: Conn,
    row: Ingress,
    delivery: Delivery,
    to: DeliveryStatus,
    reason: DeliveryReason | None,
    retry_at: Any = None,
) -> Delivery | None:
    return deliveries.transition(
        conn,
        delivery.id,
        to,
        reason=str(reason) if reason else "provider_feedback",
        suppression_reason=reason,
        context=_context(row, delivery),
        retry_at=retry_at,
        strict=False,
    )


def _context(row: Ingress, delivery: Delivery) -> dict[str, Any]:
    """The feedback as history and traces keep it: ids, kind and safe evidence only."""
    return {
        "source": "provider_feedback",
        "provider": row.provider,
        "feedback_kind": str(row.kind),
        "provider_event_id": row.provider_event_id,
        "ingress_id": str(row.id),
        "permanent": row.permanent,
        "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
        "evidence": row.evidence,
        "delivery_id": str(delivery.id),
    }


def _log(row: Ingress, action: str, delivery: Delivery | None, **details: Any) -> None:
    logger.info(
        action.replace(".", " "),
        extra={
            "action": action,
            "provider": row.provider,
            "ingress_id": str(row.id),
            "kind": str(row.kind),
            "tenant_id": delivery.tenant_id if delivery else None,
            "delivery_id": str(delivery.id) if delivery else None,
            **details,
        },
    )
