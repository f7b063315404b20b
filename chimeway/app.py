"""The ``Chimeway`` object: the public front door. It builds the engine (settings, the
connection pool, adapters, notifiers) and the Procrastinate App with Chimeway's tasks; its
methods check their arguments and delegate to :mod:`chimeway.engine`."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import procrastinate
from psycopg_pool import ConnectionPool

from chimeway import db, jobs
from chimeway.adapters import Adapter
from chimeway.config import Maintenance, RetryPolicy, Settings
from chimeway.content import ContentSchemas
from chimeway.db import Conn
from chimeway.engine import deliver, explain, maintenance, signals, trigger
from chimeway.engine import progression as engine_progression
from chimeway.engine.context import Engine
from chimeway.errors import InvalidArgument, NotFound, translated
from chimeway.notifiers import Notifier
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

logger = logging.getLogger(__name__)


class Chimeway:
    """One per application process. Thread-safe; close it (or use ``with``) when done.

    ``database_url``: else ``$CHIMEWAY_DATABASE_URL``, else the embedded server.
    ``adapters``: channel -> adapter; channels without one use ``default_adapter``
    (a :class:`~chimeway.LoggerAdapter` unless given). ``retry``: channel ->
    :class:`~chimeway.RetryPolicy`. ``stuck_after``: how long a delivery may stay
    ``dispatched`` before another worker may take it over (well above your slowest provider
    call: see docs/production.md). ``delivery_batch_size``: deliveries planned together (a
    fan-out, runs advancing together) share ``deliver`` jobs of up to this many; 1 gives one
    job per delivery. ``send_concurrency``: adapter calls one process makes at once for such
    jobs.
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
        settings = Settings(
            retry=dict(retry or {}),
            default_retry=default_retry or RetryPolicy(),
            stuck_after=stuck_after,
            maintenance=maintenance or Maintenance(),
            delivery_batch_size=delivery_batch_size,
            send_concurrency=send_concurrency,
        )
        #: The engine the services run on (internal: its shape may change).
        self.engine = Engine(
            db.database_url(database_url, report=_embedded_warning),
            settings=settings,
            adapters=adapters,
            default_adapter=default_adapter,
            content_schemas=content_schemas,
            notifiers=notifiers,
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            pool_timeout=pool_timeout,
        )
        #: The Procrastinate App: add your own tasks to it; ``chimeway worker`` runs them too.
        self.procrastinate = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=self.engine.database_url, pool_factory=self.engine.job_pool
            )
        )
        self.procrastinate.add_tasks_from(
            jobs.build_blueprint(self.engine), namespace=jobs.NAMESPACE
        )
        #: Tenant-scoped reads of workflow runs (``cw.workflows.explain`` ...).
        self.workflows = Workflows(self.engine)
        #: Drive runs by hand (tests, operators): ``cw.progression.progress_run`` ...
        self.progression = Progression(self.engine)

    # -- resources ---------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.engine.database_url

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    @property
    def pool(self) -> ConnectionPool[Conn]:
        """The connection pool (opened on first use), for your own queries."""
        return self.engine.pool

    @contextmanager
    def transaction(self, conn: Conn | None = None) -> Iterator[Conn]:
        """A pool connection in a transaction that commits at the end; with ``conn``, a
        savepoint in the caller's transaction."""
        with self.engine.transaction(conn) as tx:
            yield tx

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Chimeway:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def register_notifier(self, notifier: type[Notifier] | Notifier) -> Notifier:
        """Make ``notifier`` known by its key (for ``trigger("key", ...)`` and the CLI)."""
        return self.engine.register_notifier(notifier)

    def notifier(self, key: str) -> Notifier:
        """The registered notifier with this key; NotFound otherwise."""
        return self.engine.notifier(key)

    # -- writes ------------------------------------------------------------------------

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
            notifier = self.engine.notifier(notifier)
        return trigger.trigger(
            self.engine,
            notifier,
            params,
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            conn=conn,
        )

    def track_signal(
        self,
        tenant_id: str,
        actor_id: str,
        event_name: str,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        conn: Conn | None = None,
        route: Literal["job", "now"] = "job",
    ) -> SignalTracked:
        """Record a signal and route it, in one transaction (the caller's, with ``conn``):
        ``route="job"`` defers the routing to a worker (the signal is written at the cost
        of one statement); ``route="now"`` routes it here, before the commit, so the resumed
        runs' next deliveries are already planned and start one job hop sooner. A repeated
        ``idempotency_key`` (per tenant) is inert."""
        return signals.track_signal(
            self.engine,
            tenant_id,
            actor_id,
            event_name,
            payload,
            idempotency_key,
            conn=conn,
            route=route,
        )

    # -- what jobs do, on demand -------------------------------------------------------

    def route_signal(self, signal_id: uuid.UUID | str, conn: Conn | None = None) -> Routed:
        """Route one signal now, in this process (what the ``route_signal`` job does), in
        a transaction of its own or, with ``conn``, in the caller's."""
        with self.engine.transaction(conn) as tx:
            return signals.route_signal(self.engine, tx, _uuid(signal_id, "signal"))

    def deliver(self, delivery_id: uuid.UUID | str) -> DeliverResult:
        """Send one delivery now, in this process (what a ``deliver`` job does)."""
        with translated():
            return deliver.deliver(self.engine, _uuid(delivery_id, "delivery"))

    def deliver_many(self, delivery_ids: Iterable[uuid.UUID | str]) -> list[DeliverResult]:
        """Send these deliveries now, in this process, as one ``deliver_many`` job with a
        chunk of a fan-out does; one result per distinct id."""
        with translated():
            return deliver.deliver_many(self.engine, [_uuid(d, "delivery") for d in delivery_ids])

    def sweep(
        self, now: dt.datetime | None = None, report: Callable[[str], None] | None = None
    ) -> SweepReport:
        """One maintenance sweep now (what the periodic ``sweep`` job does)."""
        with translated():
            return maintenance.sweep(self.engine, _aware(now), report)

    # -- reads -------------------------------------------------------------------------

    def explain_delivery(
        self, tenant_id: str, delivery_id: uuid.UUID | str, conn: Conn | None = None
    ) -> DeliveryExplanation:
        """The delivery's timeline of decisions and why it did or did not send."""
        with self.engine.transaction(conn) as tx:
            return explain.explain_delivery(tx, tenant_id, _uuid(delivery_id, "delivery"))

    def delivery(
        self, tenant_id: str, delivery_id: uuid.UUID | str, conn: Conn | None = None
    ) -> Delivery:
        """The delivery row; another tenant's is NotFound, exactly like a missing one."""
        with self.engine.transaction(conn) as tx:
            return explain.delivery(tx, tenant_id, _uuid(delivery_id, "delivery"))


class Workflows:
    """``cw.workflows``: tenant-scoped operator reads of workflow runs, over the pool (the
    same reads as :mod:`chimeway.workflows`, which take a connection)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def explain(
        self, tenant_id: str, execution_id: uuid.UUID | str, conn: Conn | None = None
    ) -> RunExplanation:
        """Where the run is and why."""
        with self._engine.transaction(conn) as tx:
            return explain.explain_run(tx, tenant_id, _uuid(execution_id, "workflow run"))

    def list_traces(
        self,
        tenant_id: str,
        execution_id: uuid.UUID | str,
        limit: int | None = None,
        conn: Conn | None = None,
    ) -> list[Transition]:
        """The run's transitions, oldest first."""
        with self._engine.transaction(conn) as tx:
            return explain.list_traces(tx, tenant_id, _uuid(execution_id, "workflow run"), limit)

    def run_deliveries(
        self, tenant_id: str, execution_id: uuid.UUID | str, conn: Conn | None = None
    ) -> list[uuid.UUID]:
        """The ids of the run's deliveries, in step order."""
        with self._engine.transaction(conn) as tx:
            return explain.run_delivery_ids(tx, tenant_id, _uuid(execution_id, "workflow run"))

    def list_runs(
        self,
        tenant_id: str,
        *,
        state: str | None = None,
        workflow_key: str | None = None,
        limit: int = 50,
        conn: Conn | None = None,
    ) -> list[RunExplanation]:
        """The tenant's runs, newest first."""
        with self._engine.transaction(conn) as tx:
            return explain.list_runs(
                tx, tenant_id, state=state, workflow_key=workflow_key, limit=limit
            )


class Progression:
    """``cw.progression``: drive runs by hand (tests, sweeps, operators)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def progress_run(
        self, run_id: uuid.UUID | str, now: dt.datetime | None = None, conn: Conn | None = None
    ) -> ProgressResult:
        """Evaluate one run now (on ``now``, for tests), in a transaction of its own or,
        with ``conn``, in the caller's."""
        run = _uuid(run_id, "workflow run")
        with self._engine.transaction(conn) as tx:
            return engine_progression.progress_in(self._engine, tx, run, _aware(now))

    def progress_due_runs(
        self, now: dt.datetime | None = None, limit: int = 10_000, batch_size: int = 200
    ) -> list[ProgressResult]:
        """Advance up to ``limit`` due waits, ``batch_size`` runs per transaction."""
        for name, value in (("limit", limit), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a whole number of at least 1, not {value!r}")
        with translated():
            return engine_progression.progress_due_runs(
                self._engine, _aware(now), limit, batch_size
            )


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
