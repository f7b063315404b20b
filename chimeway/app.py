"""The ``Chimeway`` object: settings, a connection pool, the Procrastinate App with Chimeway's
tasks, the adapter registry (channel -> adapter) and the notifier registry."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import procrastinate
import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from chimeway import deliveries, jobs, progression, settings, traces, workflows
from chimeway.adapters import Adapter, LoggerAdapter
from chimeway.config import Maintenance, RetryPolicy
from chimeway.content import ContentSchemas
from chimeway.dispatch import dispatch, dispatch_many
from chimeway.dsl import Workflow
from chimeway.errors import ConfigurationError, InvalidArgument, NotFound, translated
from chimeway.maintenance import sweep
from chimeway.notifiers import Notifier, resolve_notifier
from chimeway.results import (
    DeliverResult,
    Delivery,
    DeliveryExplanation,
    Duplicate,
    ProgressResult,
    Routed,
    RunExplanation,
    SignalTracked,
    SweepReport,
    Transition,
    Triggered,
)
from chimeway.signals import route_signal, track_signal
from chimeway.trigger import trigger

Conn = psycopg.Connection[Any]
logger = logging.getLogger(__name__)
IDLE = TransactionStatus.IDLE
T = TypeVar("T")
R = TypeVar("R")


class Chimeway:
    """One per application process. Thread-safe; close it (or use ``with``) when done.

    ``database_url``: else ``$CHIMEWAY_DATABASE_URL``, else the embedded server.
    ``adapters``: channel -> adapter; channels without one use ``default_adapter``
    (a :class:`LoggerAdapter` unless given). ``retry``: channel -> :class:`RetryPolicy`.
    ``stuck_after``: how long a delivery may stay ``dispatched`` before another worker may
    take it over (well above your slowest provider call: see docs/production.md).
    ``delivery_batch_size``: deliveries planned together (a fan-out, runs advancing
    together) share ``deliver`` jobs of up to this many; 1 gives one job per delivery.
    ``send_concurrency``: adapter calls one process makes at once for such jobs.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        adapters: Mapping[str, Adapter] | None = None,
        default_adapter: Adapter | None = None,
        notifiers: Iterable[type[Notifier] | Notifier] = (),
        content_schemas: ContentSchemas | None = None,
        retry: Mapping[str, RetryPolicy] | None = None,
        default_retry: RetryPolicy | None = None,
        stuck_after: dt.timedelta = dt.timedelta(minutes=5),
        maintenance: Maintenance | None = None,
        delivery_batch_size: int = 50,
        send_concurrency: int = 32,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
    ) -> None:
        self.database_url = settings.database_url(database_url, report=_embedded_warning)
        self.adapters: dict[str, Adapter] = dict(adapters or {})
        self.default_adapter: Adapter = default_adapter or LoggerAdapter()
        self.content_schemas = content_schemas or ContentSchemas.default()
        self.retry: dict[str, RetryPolicy] = dict(retry or {})
        self.default_retry = default_retry or RetryPolicy()
        self.stuck_after = stuck_after
        self.maintenance = maintenance or Maintenance()
        self.notifiers: dict[str, Notifier] = {}
        for notifier in notifiers:
            self.register_notifier(notifier)
        self._pool_sizes = (pool_min_size, pool_max_size)
        self._pool_timeout = pool_timeout
        self._pool: ConnectionPool[Conn] | None = None
        self._pool_lock = threading.Lock()
        self._definitions: dict[tuple[str, int, str], workflows.Definition] = {}
        self._steps: dict[uuid.UUID, list[workflows.StepRow]] = {}
        for name, value in (
            ("delivery_batch_size", delivery_batch_size),
            ("send_concurrency", send_concurrency),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a whole number of at least 1, not {value!r}")
        self.send_concurrency = send_concurrency
        self._sender: ThreadPoolExecutor | None = None
        self.jobs = jobs.Deferrer(delivery_batch_size)
        #: The Procrastinate App: add your own tasks to it; ``chimeway worker`` runs them too.
        self.procrastinate = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=self.database_url, pool_factory=self._job_pool
            )
        )
        self.procrastinate.add_tasks_from(jobs.build_blueprint(self), namespace=jobs.NAMESPACE)
        self.workflows = _Workflows(self)
        self.progression = _Progression(self)

    # -- resources ---------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Conn]:
        pool = self._pool
        return pool if pool is not None else self._open_pool()

    def _open_pool(self) -> ConnectionPool[Conn]:
        with self._pool_lock:  # worker threads may ask for it at the same time
            if self._pool is not None:
                return self._pool
            low, high = self._pool_sizes
            self._pool = ConnectionPool(
                self.database_url,
                min_size=low,
                max_size=high,
                open=True,
                name="chimeway",
                timeout=self._pool_timeout,
                # Connections broken by a server restart are replaced, not handed out.
                check=_IdleCheck(),
            )
        return self._pool

    def _job_pool(self, **options: Any) -> AsyncConnectionPool[Any]:
        """The pool Procrastinate opens for a worker, sized like ours."""
        low, high = self._pool_sizes
        return AsyncConnectionPool(
            **{**options, "min_size": low, "max_size": high, "name": "chimeway-jobs"}
        )

    def resize_pool(self, max_size: int) -> None:
        """Grow the pool to at least ``max_size`` connections (a worker needs one per job)."""
        low, high = self._pool_sizes
        if max_size > high:
            self._pool_sizes = (low, max_size)
            if self._pool is not None:
                self._pool.resize(low, max_size)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.shutdown()
            self._sender = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Chimeway:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, conn: Conn | None = None) -> Iterator[Conn]:
        """The caller's connection inside a savepoint, or a pool connection committing at
        the end; psycopg errors Chimeway can explain come out as Chimeway errors."""
        with translated():
            if conn is not None and not conn.autocommit and conn.info.transaction_status == IDLE:
                # Our first statement opens the caller's transaction, which is theirs to
                # commit; on error nothing of theirs is in it yet, so roll it all back.
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
            elif conn is not None:
                # A savepoint inside the caller's transaction (or, in autocommit mode, a
                # transaction of our own).
                with conn.transaction():
                    yield conn
            else:
                with self.pool.connection() as own, own.transaction():
                    yield own

    # -- registries ----------------------------------------------------------------------

    def register_notifier(self, notifier: type[Notifier] | Notifier) -> Notifier:
        resolved = resolve_notifier(notifier)
        self.notifiers[resolved.key] = resolved
        return resolved

    def notifier(self, key: str) -> Notifier:
        try:
            return self.notifiers[key]
        except KeyError:
            known = ", ".join(sorted(self.notifiers)) or "none"
            raise NotFound(f"no notifier {key!r} is registered (registered: {known})") from None

    def adapter_for(self, channel: str) -> Adapter:
        return self.adapters.get(channel, self.default_adapter)

    def retry_policy(self, channel: str) -> RetryPolicy:
        return self.retry.get(channel, self.default_retry)

    def definition_steps(self, conn: Conn, definition_id: uuid.UUID) -> list[workflows.StepRow]:
        """A definition's steps, read once per process: definitions never change."""
        steps = self._steps.get(definition_id)
        if steps is None:
            steps = self._steps[definition_id] = workflows.definition_steps(conn, definition_id)
        return steps

    def current_step(self, conn: Conn, run: workflows.Run) -> workflows.StepRow:
        step = next(
            (
                s
                for s in self.definition_steps(conn, run.definition_id)
                if s.id == run.current_step_id
            ),
            None,
        )
        return step or workflows.get_current_step(conn, run)

    def step_by_key(
        self, conn: Conn, definition_id: uuid.UUID, step_key: str
    ) -> workflows.StepRow | None:
        steps = self.definition_steps(conn, definition_id)
        return next((s for s in steps if s.step_key == step_key), None)

    def ensure_definition(
        self, conn: Conn, notification_key: str, workflow: Workflow
    ) -> workflows.Definition:
        return workflows.ensure_definition(conn, notification_key, workflow, self._definitions)

    # -- the public API ----------------------------------------------------------------------

    def trigger(
        self,
        notifier: type[Notifier] | Notifier | str,
        params: Mapping[str, Any],
        *,
        tenant_id: str,
        idempotency_key: str,
        correlation_id: str | None = None,
        conn: Conn | None = None,
    ) -> Triggered | Duplicate:
        """Write the event, its notifications, runs and deliveries, and defer the delivery
        jobs, all in one transaction (the caller's, when ``conn`` is given)."""
        if isinstance(notifier, str):
            notifier = self.notifier(notifier)
        return trigger(
            self,
            notifier,
            params,
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            conn=conn,
        )

    def explain_delivery(self, tenant_id: str, delivery_id: uuid.UUID | str) -> DeliveryExplanation:
        with self.transaction() as conn:
            return traces.explain_delivery(conn, tenant_id, _uuid(delivery_id, "delivery"))

    def track_signal(
        self,
        tenant_id: str,
        actor_id: str,
        event_name: str,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        conn: Conn | None = None,
    ) -> SignalTracked:
        """Record a signal and defer its routing, in one transaction (the caller's, with
        ``conn``). A repeated ``idempotency_key`` (per tenant) is inert."""
        return track_signal(
            self, tenant_id, actor_id, event_name, payload, idempotency_key, conn=conn
        )

    def route_signal(self, signal_id: uuid.UUID | str) -> Routed:
        """Route one signal now, in this process (what the ``route_signal`` job does)."""
        with translated():
            return route_signal(self, _uuid(signal_id, "signal"))

    def sweep(
        self, now: dt.datetime | None = None, report: Callable[[str], None] | None = None
    ) -> SweepReport:
        """One maintenance sweep now (what the periodic ``sweep`` job does)."""
        with translated():
            return sweep(self, _aware(now), report)

    def deliver(self, delivery_id: uuid.UUID | str) -> DeliverResult:
        """Send one delivery now, in this process (what a ``deliver`` job does)."""
        with translated():
            return dispatch(self, _uuid(delivery_id, "delivery"))

    def deliver_many(self, delivery_ids: Iterable[uuid.UUID | str]) -> list[DeliverResult]:
        """Send these deliveries now, in this process, as one ``deliver`` job with a chunk
        of a fan-out does; one result per distinct id."""
        with translated():
            return dispatch_many(self, [_uuid(d, "delivery") for d in delivery_ids])

    def send_in_groups(
        self, send: Callable[[T], R], items: Sequence[T], *, every: float
    ) -> Iterator[list[tuple[T, R]]]:
        """``send`` applied to every item, on up to ``send_concurrency`` threads shared by
        the whole process (one item, or ``send_concurrency=1``: in the calling thread). The
        finished ``(item, result)`` pairs come out in groups: all of them at once if they
        finish within ``every`` seconds, else what finished by then, and so on."""
        if len(items) <= 1 or self.send_concurrency == 1:
            group: list[tuple[T, R]] = []
            started = time.monotonic()
            for item in items:
                group.append((item, send(item)))
                if time.monotonic() - started >= every:
                    yield group
                    group, started = [], time.monotonic()
            if group:
                yield group
            return
        futures = {self._send_threads().submit(send, item): item for item in items}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=every)
            if done:
                yield [(futures[f], f.result()) for f in done]

    def _send_threads(self) -> ThreadPoolExecutor:
        sender = self._sender
        if sender is None:
            with self._pool_lock:
                if self._sender is None:
                    self._sender = ThreadPoolExecutor(
                        self.send_concurrency, thread_name_prefix="chimeway-send"
                    )
                sender = self._sender
        return sender

    def delivery(self, tenant_id: str, delivery_id: uuid.UUID | str) -> Delivery:
        """The delivery row; another tenant's is NotFound, exactly like a missing one."""
        with self.transaction() as conn:
            return deliveries.get_for_tenant(conn, tenant_id, _uuid(delivery_id, "delivery"))


class _Workflows:
    """``cw.workflows``: tenant-scoped operator reads over the pool."""

    def __init__(self, cw: Chimeway) -> None:
        self._cw = cw

    def explain(self, tenant_id: str, execution_id: uuid.UUID | str) -> RunExplanation:
        with self._cw.transaction() as conn:
            return workflows.explain(conn, tenant_id, _uuid(execution_id, "workflow run"))

    def list_traces(
        self, tenant_id: str, execution_id: uuid.UUID | str, limit: int | None = None
    ) -> list[Transition]:
        with self._cw.transaction() as conn:
            return workflows.list_traces(
                conn, tenant_id, _uuid(execution_id, "workflow run"), limit
            )

    def run_deliveries(self, tenant_id: str, execution_id: uuid.UUID | str) -> list[uuid.UUID]:
        with self._cw.transaction() as conn:
            return workflows.run_deliveries(conn, tenant_id, _uuid(execution_id, "workflow run"))

    def list_runs(
        self,
        tenant_id: str,
        *,
        state: str | None = None,
        workflow_key: str | None = None,
        limit: int = 50,
    ) -> list[RunExplanation]:
        with self._cw.transaction() as conn:
            return workflows.list_runs(
                conn, tenant_id, state=state, workflow_key=workflow_key, limit=limit
            )


class _Progression:
    """``cw.progression``: drive runs by hand (tests, sweeps, operators)."""

    def __init__(self, cw: Chimeway) -> None:
        self._cw = cw

    def progress_run(
        self, run_id: uuid.UUID | str, now: dt.datetime | None = None
    ) -> ProgressResult:
        with translated():
            return progression.progress_run(self._cw, _uuid(run_id, "workflow run"), _aware(now))

    def progress_due_runs(
        self, now: dt.datetime | None = None, limit: int = 10_000, batch_size: int = 200
    ) -> list[ProgressResult]:
        """Advance up to ``limit`` due waits, ``batch_size`` runs per transaction."""
        if limit < 1 or batch_size < 1:
            raise InvalidArgument(
                f"limit and batch_size must be at least 1 (got {limit} and {batch_size})"
            )
        with translated():
            return progression.progress_due_runs(self._cw, _aware(now), limit, batch_size)


class _IdleCheck:
    """The pool's check on checkout: ping a connection only if it may have sat idle long
    enough for a server restart or a dropped network to go unnoticed. A busy worker's
    connections come back within milliseconds and skip the round trip (a few percent of a
    step); an error on one of those is retried where it matters (a send's record)."""

    def __init__(self, after: float = 2.0) -> None:
        self.after = after
        self._lock = threading.Lock()
        self._checked: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: Conn) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._checked.get(conn)
            self._checked[conn] = now
        if last is None or now - last > self.after:  # idle for at most now - last
            ConnectionPool.check_connection(conn)


def _embedded_warning(message: str) -> None:
    logger.warning(
        "%s: for demos and tests only; pass database_url= or set CHIMEWAY_DATABASE_URL",
        message,
        extra={"action": "chimeway.embedded_database"},
    )


def _aware(now: dt.datetime | None) -> dt.datetime | None:
    if now is not None and now.tzinfo is None:
        raise InvalidArgument("now= must be timezone-aware (the database keeps timestamptz)")
    return now


def _uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


__all__ = ["Chimeway", "ConfigurationError"]
