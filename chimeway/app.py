"""The ``Chimeway`` object: the public front door. It builds the engine (settings, the
connection pool, adapters, notifiers) and the Procrastinate App with Chimeway's tasks; its
methods check their arguments and delegate to :mod:`chimeway.engine`."""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import procrastinate
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette

from chimeway import db, http, jobs
from chimeway.adapters import Adapter
from chimeway.config import (
    ENV_SECRET,
    ChimewaySettings,
    Maintenance,
    Retention,
    RetryPolicy,
    Settings,
    Throttle,
)
from chimeway.content import ContentSchemas
from chimeway.db import AsyncConn, Conn
from chimeway.engine import (
    deliver,
    explain,
    inbox,
    maintenance,
    operations,
    preferences,
    recipients,
    retention,
    signals,
    trigger,
    webhooks,
)
from chimeway.engine import progression as engine_progression
from chimeway.engine.context import Engine
from chimeway.errors import InvalidArgument, NotFound, translated
from chimeway.feedback import FeedbackProvider
from chimeway.notifiers import Notifier
from chimeway.policy import PreferenceUpdate
from chimeway.results import (
    CapSetting,
    DeliverResult,
    Delivery,
    DeliveryExplanation,
    DeliveryRedriven,
    DeliverySummary,
    Duplicate,
    FeedbackProcessed,
    Forgotten,
    InboxAction,
    InboxCounts,
    InboxMarked,
    InboxPage,
    InboxStatus,
    PreferenceRecord,
    ProgressResult,
    PruneReport,
    QuietHoursSetting,
    RecipientPreferences,
    RecipientRecord,
    Routed,
    RunCancelled,
    RunExplanation,
    SignalTracked,
    SweepReport,
    Transition,
    Triggered,
    WebhookResult,
)
from chimeway.storable import preview

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Chimeway:
    """One per application process. Thread-safe; close it (or use ``with``) when done.

    ``database_url``: else ``$CHIMEWAY_DATABASE_URL``, else the embedded server.
    ``adapters``: channel -> adapter. A channel without one is sent by ``default_adapter``
    if you give one (``LoggerAdapter()`` for a demo); otherwise it is refused: a worker
    does not start while such a channel has deliveries waiting, and a send fails with an
    error naming the channel. Nothing is ever "delivered" silently. ``webhook_providers``:
    the :mod:`chimeway.feedback` providers whose webhooks ``cw.webhooks.process`` (and
    ``chimeway serve``) accept, by name. ``retry``: channel ->
    :class:`~chimeway.RetryPolicy`. ``stuck_after``: how long a delivery may stay
    ``dispatched`` before another worker may take it over (well above your slowest provider
    call: see docs/production.md). ``delivery_batch_size``: deliveries planned together (a
    fan-out, runs advancing together) share ``deliver`` jobs of up to this many; 1 gives one
    job per delivery. ``send_concurrency`` and ``send_timeout``: the lane (threads, deadline)
    of an adapter that does not declare its own ``capacity`` and ``timeout``.
    ``max_takeovers``: how often a send whose process stopped reporting is taken over before
    the delivery is cancelled as ``abandoned``. ``secret``: signs the tokens that let a
    browser read one recipient's inbox (``cw.inbox.token``) and the unsubscribe links: at
    least 32 bytes, else ``$CHIMEWAY_SECRET``; a list, newest first, rotates keys (the first
    signs, every one verifies). ``public_url``: where recipients reach ``chimeway serve``
    (``https://notify.example.com/chimeway``); with a secret too, every send that is not of
    a critical notifier gets a one-click unsubscribe link (SMTP's ``List-Unsubscribe``),
    valid for ``unsubscribe_ttl``. ``throttles``: channel -> :class:`~chimeway.Throttle`,
    a send rate shared by every worker.
    ``retention``: how long finished jobs and history are kept before the periodic prune
    removes them (:class:`~chimeway.Retention`).

    Each of ``stuck_after``, ``delivery_batch_size``, ``send_concurrency``, ``send_timeout``,
    ``max_takeovers``, ``pool_min_size``, ``pool_max_size``, ``pool_timeout``,
    ``unsubscribe_ttl``, ``default_retry``, ``maintenance`` and ``retention`` not given here
    is read from its ``CHIMEWAY_*`` variable (:class:`~chimeway.ChimewaySettings`,
    docs/production.md#settings-from-the-environment), else its default.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        adapters: Mapping[str, Adapter] | None = None,
        default_adapter: Adapter | None = None,
        notifiers: Iterable[type[Notifier] | Notifier] = (),
        webhook_providers: Iterable[FeedbackProvider] = (),
        content_schemas: ContentSchemas | None = None,
        retry: Mapping[str, RetryPolicy] | None = None,
        default_retry: RetryPolicy | None = None,
        stuck_after: dt.timedelta | None = None,
        maintenance: Maintenance | None = None,
        retention: Retention | None = None,
        delivery_batch_size: int | None = None,
        send_concurrency: int | None = None,
        send_timeout: dt.timedelta | None = None,
        max_takeovers: int | None = None,
        pool_min_size: int | None = None,
        pool_max_size: int | None = None,
        pool_timeout: float | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        public_url: str | None = None,
        throttles: Mapping[str, Throttle] | None = None,
        unsubscribe_ttl: dt.timedelta | None = None,
    ) -> None:
        env = ChimewaySettings.from_environment()
        settings = Settings(
            retry=dict(retry or {}),
            default_retry=_given(default_retry, env.default_retry),
            stuck_after=_given(stuck_after, env.stuck_after),
            maintenance=_given(maintenance, env.maintenance),
            retention=_given(retention, env.retention),
            delivery_batch_size=_given(delivery_batch_size, env.delivery_batch_size),
            send_concurrency=_given(send_concurrency, env.send_concurrency),
            send_timeout=_given(send_timeout, env.send_timeout),
            max_takeovers=_given(max_takeovers, env.max_takeovers),
            throttles=dict(throttles or {}),
            unsubscribe_ttl=_given(unsubscribe_ttl, env.unsubscribe_ttl),
        )
        #: The engine the services run on (internal: its shape may change).
        self.engine = Engine(
            db.database_url(database_url, report=_embedded_warning),
            settings=settings,
            adapters=adapters,
            default_adapter=default_adapter,
            content_schemas=content_schemas,
            notifiers=notifiers,
            webhook_providers=webhook_providers,
            pool_min_size=_given(pool_min_size, env.pool_min_size),
            pool_max_size=_given(pool_max_size, env.pool_max_size),
            pool_timeout=_given(pool_timeout, env.pool_timeout),
            secrets=_secrets(secret),
            public_url=public_url,
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
        #: The recipient directory: ``cw.recipients.upsert/get/forget``.
        self.recipients = Recipients(self.engine)
        #: Provider feedback: ``cw.webhooks.process(provider, body, headers)``.
        self.webhooks = Webhooks(self.engine)
        #: The in-app inbox: ``cw.inbox.list/counts/mark/token``.
        self.inbox = Inbox(self.engine)
        #: Opt-outs, quiet hours, caps, unsubscribe links: ``cw.preferences.set/get`` ...
        self.preferences = Preferences(self.engine)

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

    def asgi(
        self, *, cors_origins: Iterable[str] = (), operator_tokens: Iterable[str] | None = None
    ) -> Starlette:
        """The HTTP service of ``chimeway serve`` as an ASGI app, to mount in your own
        (FastAPI ``app.mount("/chimeway", cw.asgi())``, Starlette, Django's ASGI router):
        ``POST /v1/webhooks/{provider}``, the inbox under ``/v1/inbox`` (for pages served
        from ``cors_origins``, like ``"https://app.example.com"``, too),
        ``GET|POST /v1/unsubscribe/{token}``, ``GET /healthz``, ``GET /metrics``, and the
        read-only operator dashboard under ``/dashboard``, opened by ``operator_tokens``
        (else ``$CHIMEWAY_OPERATOR_TOKENS``): ``"TENANT:TOKEN"`` reads one tenant, a bare
        ``"TOKEN"`` any tenant (docs/http.md)."""
        return http.build(self.engine, cors_origins=cors_origins, operator_tokens=operator_tokens)

    def blueprint(self) -> procrastinate.Blueprint:
        """Chimeway's tasks as a new Procrastinate Blueprint, for an App of your own; load
        it under the namespace ``"chimeway"`` (the jobs name their tasks so), or call
        :meth:`add_tasks_to`, which does."""
        return jobs.build_blueprint(self.engine)

    def add_tasks_to(self, app: procrastinate.App) -> procrastinate.App:
        """Load Chimeway's tasks into your own Procrastinate ``app`` (one that already runs
        your tasks, e.g. ``procrastinate.contrib.django``'s), so its workers run them too:
        they must listen to Chimeway's queues (``chimeway_delivery``, ``chimeway_progress``,
        ``chimeway_signals``, ``chimeway_maintenance``) or to all queues. ``app``."""
        app.add_tasks_from(self.blueprint(), namespace=jobs.NAMESPACE)
        return app

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

    # -- async twins: the same calls, joining an AsyncConnection ------------------------

    async def trigger_async(
        self,
        notifier: type[Notifier] | Notifier | str,
        params: Mapping[str, Any],
        *,
        tenant_id: str,
        idempotency_key: str,
        correlation_id: str | None = None,
        conn: AsyncConn | None = None,
    ) -> Triggered | Duplicate:
        """:meth:`trigger` for async code: with ``conn`` (a psycopg ``AsyncConnection``;
        a SQLAlchemy ``AsyncSession``'s through ``chimeway.contrib.sqlalchemy``), in its
        open transaction, which stays yours to commit; the event loop is not blocked."""
        return await db.joined(
            conn,
            lambda tx: self.trigger(
                notifier,
                params,
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                conn=tx,
            ),
        )

    async def track_signal_async(
        self,
        tenant_id: str,
        actor_id: str,
        event_name: str,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        conn: AsyncConn | None = None,
        route: Literal["job", "now"] = "job",
    ) -> SignalTracked:
        """:meth:`track_signal` for async code, in ``conn``'s transaction when given."""
        return await db.joined(
            conn,
            lambda tx: self.track_signal(
                tenant_id, actor_id, event_name, payload, idempotency_key, conn=tx, route=route
            ),
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

    def prune(
        self, *, dry_run: bool = False, report: Callable[[str], None] | None = None
    ) -> PruneReport:
        """Remove finished jobs and history older than their retention ages now (what the
        periodic ``prune`` job does); with ``dry_run``, only count what would go."""
        if not isinstance(dry_run, bool):
            raise InvalidArgument(f"dry_run must be a bool, not {type(dry_run).__name__}")
        with translated():
            return retention.prune(self.engine, dry_run=dry_run, report=report)

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

    # -- operator actions --------------------------------------------------------------

    def cancel_run(
        self,
        tenant_id: str,
        run_id: uuid.UUID | str,
        reason: str,
        *,
        cancelled_by: str | None = None,
        conn: Conn | None = None,
    ) -> RunCancelled:
        """Stop a workflow run (active or waiting) and cancel its deliveries not sent yet,
        in one transaction (the caller's, with ``conn``); ``reason`` and ``cancelled_by``
        (an operator's name, not a recipient's address) go into the run's trace. A finished
        run is left alone (``cancelled`` False); another tenant's run is NotFound."""
        run = _uuid(run_id, "workflow run")
        with self.engine.transaction(conn) as tx:
            return operations.cancel_run(self.engine, tx, tenant_id, run, reason, cancelled_by)

    def redrive_delivery(
        self,
        tenant_id: str,
        delivery_id: uuid.UUID | str,
        *,
        redriven_by: str | None = None,
        conn: Conn | None = None,
    ) -> DeliveryRedriven:
        """Send a failed delivery now, or one cancelled after its provider gave up
        (retries exhausted, a permanent failure, abandoned) once more: it goes back to
        ``pending`` and its job is deferred, in one transaction (the caller's, with
        ``conn``); ``redriven_by`` goes into its history. Other statuses raise
        ``InvalidTransition``; another tenant's delivery is NotFound."""
        delivery = _uuid(delivery_id, "delivery")
        with self.engine.transaction(conn) as tx:
            return operations.redrive_delivery(self.engine, tx, tenant_id, delivery, redriven_by)

    def find(
        self,
        tenant_id: str,
        *,
        recipient: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        conn: Conn | None = None,
    ) -> list[DeliverySummary]:
        """What happened to a recipient's notifications, or to an event: the tenant's
        deliveries to ``recipient``, of the event triggered with ``idempotency_key``, or of
        the events carrying ``correlation_id`` (one of them; none: the tenant's latest),
        only those in ``status`` if given, newest first, at most ``limit`` (up to 1000).
        Another tenant's rows never match. ``cw.explain_delivery`` tells each one's story."""
        with self.engine.transaction(conn) as tx:
            return operations.find(
                tx,
                tenant_id,
                recipient=recipient,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                status=status,
                limit_to=limit,
            )


class Recipients:
    """``cw.recipients``: the recipient directory (design §12). A profile holds how to reach
    a person (``email``, ``phone``, ``locale``, ``timezone``, ``data``); adapters read it at
    send time, so a change applies to deliveries not sent yet. Personal data: Chimeway keeps
    it out of traces, logs, job arguments and error messages."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def upsert(
        self,
        tenant_id: str,
        recipient_id: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        locale: str | None = None,
        timezone: str | None = None,
        data: Mapping[str, Any] | None = None,
        clear: Iterable[str] = (),
        conn: Conn | None = None,
    ) -> RecipientRecord:
        """Create or update a profile: the fields given are set, those named in ``clear``
        emptied, the others kept; ``data`` is merged key by key. The profile as stored."""
        return recipients.upsert(
            self._engine,
            tenant_id,
            recipient_id,
            email=email,
            phone=phone,
            locale=locale,
            timezone=timezone,
            data=data,
            clear=clear,
            conn=conn,
        )

    def get(self, tenant_id: str, recipient_id: str, conn: Conn | None = None) -> RecipientRecord:
        """The profile; NotFound when the recipient has none (or belongs to another tenant)."""
        return recipients.get(self._engine, tenant_id, recipient_id, conn)

    def forget(self, tenant_id: str, recipient_id: str, conn: Conn | None = None) -> Forgotten:
        """Right to erasure: delete the profile and empty the rendered content of the
        recipient's notifications and deliveries. Their ids, statuses and histories stay, so
        what was decided can still be explained; opt-outs stay too."""
        return recipients.forget(self._engine, tenant_id, recipient_id, conn)


class Preferences:
    """``cw.preferences``: what a recipient gets, and when (design §13). Everything is per
    tenant; ``recipient_id`` ``None`` sets the tenant's default, which applies to each of its
    recipients who has not set the same thing. Planning reads these when a delivery is
    planned and again when it is claimed for sending, so a change applies to deliveries not
    sent yet. See docs/policy.md."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def set(
        self,
        tenant_id: str,
        recipient_id: str | None,
        *,
        enabled: bool,
        channel: str | None = None,
        category: str | None = None,
        workflow: str | None = None,
        conn: Conn | None = None,
    ) -> PreferenceRecord:
        """Turn a scope on or off: a channel (``channel="email"``), a category or a workflow
        (the workflow key, or the notifier key outside a workflow) on every channel or on
        one (``category="marketing", channel="sms"``). The rule as stored."""
        return preferences.set_rule(
            self._engine,
            tenant_id,
            recipient_id,
            enabled=enabled,
            channel=channel,
            category=category,
            workflow=workflow,
            conn=conn,
        )

    def set_many(
        self, tenant_id: str, updates: Iterable[PreferenceUpdate], conn: Conn | None = None
    ) -> list[PreferenceRecord]:
        """Set many rules (of one recipient's settings page, or of many recipients) in one
        statement; each recipient and scope at most once. The rules as stored."""
        return preferences.set_many(self._engine, tenant_id, updates, conn)

    def reset(
        self,
        tenant_id: str,
        recipient_id: str | None,
        *,
        channel: str | None = None,
        category: str | None = None,
        workflow: str | None = None,
        conn: Conn | None = None,
    ) -> bool:
        """Remove the rule of one scope (the recipient follows the tenant's default again);
        whether there was one."""
        return preferences.reset_rule(
            self._engine,
            tenant_id,
            recipient_id,
            channel=channel,
            category=category,
            workflow=workflow,
            conn=conn,
        )

    def get(
        self, tenant_id: str, recipient_id: str | None, conn: Conn | None = None
    ) -> RecipientPreferences:
        """The recipient's rules, quiet hours and caps, and the tenant's defaults."""
        return preferences.get(self._engine, tenant_id, recipient_id, conn)

    def set_quiet_hours(
        self,
        tenant_id: str,
        recipient_id: str | None,
        start: dt.time | None,
        end: dt.time | None,
        *,
        timezone: str | None = None,
        conn: Conn | None = None,
    ) -> QuietHoursSetting:
        """Hold deliveries from ``start`` to ``end`` (local wall times; the window wraps
        midnight when ``start > end``) until the window's end. ``timezone`` ``None``: each
        recipient's profile zone (else UTC). ``start`` and ``end`` ``None``: no quiet hours
        for this recipient, whatever the tenant's default."""
        return preferences.set_quiet_hours(
            self._engine, tenant_id, recipient_id, start, end, timezone=timezone, conn=conn
        )

    def reset_quiet_hours(
        self, tenant_id: str, recipient_id: str | None, conn: Conn | None = None
    ) -> bool:
        """Remove the recipient's quiet hours (they follow the tenant's default again)."""
        return preferences.reset_quiet_hours(self._engine, tenant_id, recipient_id, conn)

    def set_cap(
        self,
        tenant_id: str,
        recipient_id: str | None,
        max_count: int | None,
        per: dt.timedelta | None,
        *,
        channel: str | None = None,
        conn: Conn | None = None,
    ) -> CapSetting:
        """At most ``max_count`` deliveries per ``per`` to the recipient, on ``channel`` or
        on every channel; more are suppressed (``delivery_cap_reached``). ``max_count``
        ``None`` (and ``per`` ``None``): no cap of this scope, whatever the default."""
        return preferences.set_cap(
            self._engine, tenant_id, recipient_id, max_count, per, channel=channel, conn=conn
        )

    def reset_cap(
        self,
        tenant_id: str,
        recipient_id: str | None,
        *,
        channel: str | None = None,
        conn: Conn | None = None,
    ) -> bool:
        """Remove the recipient's cap of this scope (the tenant's default applies again)."""
        return preferences.reset_cap(
            self._engine, tenant_id, recipient_id, channel=channel, conn=conn
        )

    def unsubscribe_token(
        self,
        tenant_id: str,
        recipient_id: str,
        *,
        channel: str | None = None,
        category: str | None = None,
        workflow: str | None = None,
        ttl: dt.timedelta | None = None,
        conn: Conn | None = None,
    ) -> str:
        """A signed token that turns this scope off for the recipient when it is posted to
        ``/v1/unsubscribe/{token}`` (valid ``ttl``, default ``unsubscribe_ttl``): for a
        footer link or a preference centre of your own."""
        return preferences.unsubscribe_token(
            self._engine,
            tenant_id,
            recipient_id,
            channel=channel,
            category=category,
            workflow=workflow,
            ttl=ttl,
            conn=conn,
        )

    def unsubscribe_url(self, token: str) -> str:
        """The link for a token, under the app's ``public_url``."""
        return preferences.unsubscribe_url_for(self._engine, token)

    def unsubscribe(self, token: str, conn: Conn | None = None) -> PreferenceRecord:
        """What ``POST /v1/unsubscribe/{token}`` does: turn the token's scope off for its
        recipient now. ``InvalidToken`` (``TokenExpired``) when it is not valid."""
        return preferences.unsubscribe(self._engine, token, conn)


class Webhooks:
    """``cw.webhooks``: provider feedback (design §12). Hand over each provider webhook as
    received, raw body first; processing happens in a ``process_webhook`` job."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def process(
        self,
        provider: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        url: str | None = None,
        conn: Conn | None = None,
    ) -> WebhookResult:
        """Verify the webhook of the provider registered as ``provider`` on its raw ``body``
        (``url``: the public URL it was posted to, for providers that sign it), parse it and
        store one ingress row per new event with its ``process_webhook`` job, in one
        transaction (the caller's, with ``conn``). Raises ``NotFound`` for an unknown
        provider, ``WebhookUnauthorized`` or ``WebhookUnparseable`` having written nothing.
        An event the provider sent before is counted in ``duplicates`` and ignored."""
        return webhooks.process(self._engine, provider, body, headers, url=url, conn=conn)

    def process_ingress(
        self, ingress_id: uuid.UUID | str, conn: Conn | None = None
    ) -> FeedbackProcessed:
        """Process one stored event now, in this process (what its job does)."""
        with self._engine.transaction(conn) as tx:
            return webhooks.process_ingress(self._engine, tx, _uuid(ingress_id, "ingress row"))


class Inbox:
    """``cw.inbox``: each recipient's in-app inbox (design §14). An item is a notification
    whose ``in_app`` delivery was sent; the feed is newest first. Browsers reach it through
    the HTTP service (``/v1/inbox``) with a token your app issues (:meth:`token`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list(
        self,
        tenant_id: str,
        recipient_id: str,
        *,
        status: InboxStatus = "all",
        archived: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        conn: Conn | None = None,
    ) -> InboxPage:
        """A page of up to ``limit`` (at most 100) items, newest first, after ``cursor``
        (a page's ``next_cursor``): all, ``"unread"`` or ``"unseen"`` ones; the archived
        ones instead with ``archived=True``. Items arriving meanwhile go to the top: the
        next pages neither repeat nor skip one."""
        return inbox.list_items(
            self._engine,
            tenant_id,
            recipient_id,
            status=status,
            archived=archived,
            limit_to=limit,
            cursor=cursor,
            conn=conn,
        )

    def counts(self, tenant_id: str, recipient_id: str, conn: Conn | None = None) -> InboxCounts:
        """How many unarchived items are unseen, unread, and in all (the bell's badge)."""
        return inbox.counts(self._engine, tenant_id, recipient_id, conn)

    def mark(
        self,
        tenant_id: str,
        recipient_id: str,
        notification_ids: Sequence[uuid.UUID | str] | Literal["all"],
        action: InboxAction,
        conn: Conn | None = None,
    ) -> InboxMarked:
        """Mark items (these ids, or ``"all"``) ``"seen"``, ``"read"`` (which also sees),
        ``"archived"``, ``"unarchived"`` or ``"unread"``, in one transaction (the caller's,
        with ``conn``). Ids that are not this recipient's items are left alone; a repeated
        mark changes nothing. The first time an item is seen or read, the signal
        ``chimeway.notification.seen`` or ``chimeway.notification.read`` is tracked for the
        recipient in the same transaction: an escalation waiting for it is cancelled."""
        return inbox.mark(self._engine, tenant_id, recipient_id, notification_ids, action, conn)

    async def list_async(
        self,
        tenant_id: str,
        recipient_id: str,
        *,
        status: InboxStatus = "all",
        archived: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        conn: AsyncConn | None = None,
    ) -> InboxPage:
        """:meth:`list` for async code (``conn``: a psycopg ``AsyncConnection``)."""
        return await db.joined(
            conn,
            lambda tx: self.list(
                tenant_id,
                recipient_id,
                status=status,
                archived=archived,
                limit=limit,
                cursor=cursor,
                conn=tx,
            ),
        )

    async def counts_async(
        self, tenant_id: str, recipient_id: str, conn: AsyncConn | None = None
    ) -> InboxCounts:
        """:meth:`counts` for async code (``conn``: a psycopg ``AsyncConnection``)."""
        return await db.joined(conn, lambda tx: self.counts(tenant_id, recipient_id, tx))

    async def mark_async(
        self,
        tenant_id: str,
        recipient_id: str,
        notification_ids: Sequence[uuid.UUID | str] | Literal["all"],
        action: InboxAction,
        conn: AsyncConn | None = None,
    ) -> InboxMarked:
        """:meth:`mark` for async code, in ``conn``'s transaction when given."""
        return await db.joined(
            conn, lambda tx: self.mark(tenant_id, recipient_id, notification_ids, action, tx)
        )

    def token(
        self,
        tenant_id: str,
        recipient_id: str,
        ttl: dt.timedelta = dt.timedelta(hours=1),
        *,
        now: dt.datetime | None = None,
    ) -> str:
        """A signed token that lets its bearer (the recipient's browser) read and mark this
        recipient's inbox over HTTP until ``ttl`` (at most 30 days) has passed. Issue it
        from your app once the user is authenticated; needs ``Chimeway(secret=...)``."""
        return inbox.token(self._engine, tenant_id, recipient_id, ttl, _aware(now))


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


def _secrets(
    secret: str | bytes | Sequence[str | bytes] | None,
) -> Sequence[str | bytes]:
    """``secret=`` (else ``$CHIMEWAY_SECRET``): one secret, or several, newest first."""
    if secret is None:
        secret = os.environ.get(ENV_SECRET) or None
    if secret is None:
        return ()
    return [secret] if isinstance(secret, str | bytes) else list(secret)


def _given(value: T | None, from_environment: T) -> T:
    """An argument given in code wins over its ``CHIMEWAY_*`` variable (or default)."""
    return from_environment if value is None else value


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
        raise NotFound(f"{what} {preview(value)} not found") from None
