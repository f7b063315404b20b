"""The engine's context: what every service needs besides its connection.

One :class:`Engine` per :class:`~chimeway.Chimeway`, built by it: the settings, the connection
pool, the deferrer (jobs in the caller's transaction), the adapters by channel, the feedback
providers by name, the definition catalog, the content schemas, the notifier registry and the
send threads. It is the
explicit, typed interface the services used to reach through the façade for.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from chimeway.adapters import Adapter, DeliveryRequest, InboxAdapter, Sent
from chimeway.config import RetryPolicy, Settings
from chimeway.content import ContentSchemas
from chimeway.db import Conn, check_sync
from chimeway.engine import connections, logbook
from chimeway.engine.batching import GroupCommit
from chimeway.engine.catalog import Catalog
from chimeway.engine.liveness import Liveness
from chimeway.engine.senders import Senders
from chimeway.errors import ConfigurationError, NotFound, translated
from chimeway.feedback import FeedbackProvider, providers_by_name
from chimeway.notifiers import Notifier, resolve_notifier
from chimeway.policy import TokenSigner
from chimeway.profiles import ADDRESS_FIELDS
from chimeway.storable import preview
from chimeway.store.jobs import Deferrer

IDLE = TransactionStatus.IDLE
#: The longest interval between two beats of a process that holds deliveries.
BEAT_MAX = dt.timedelta(seconds=10)


class Engine:
    """Resources and settings shared by the services. Thread-safe; :meth:`close` it."""

    def __init__(
        self,
        database_url: str,
        *,
        settings: Settings,
        adapters: Mapping[str, Adapter] | None = None,
        default_adapter: Adapter | None = None,
        content_schemas: ContentSchemas | None = None,
        notifiers: Iterable[type[Notifier] | Notifier] = (),
        webhook_providers: Iterable[FeedbackProvider] = (),
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
        secrets: Sequence[str | bytes] = (),
        public_url: str | None = None,
    ) -> None:
        self.database_url = database_url
        self.settings = settings
        #: Signs and verifies inbox tokens and unsubscribe links (newest secret first;
        #: ``None``: no secret configured).
        self.signer: TokenSigner | None = TokenSigner(secrets) if secrets else None
        #: Where ``chimeway serve`` (or ``cw.asgi()``) is reachable from recipients: the base
        #: of unsubscribe links, e.g. ``https://notify.example.com/chimeway``.
        self.public_url = _public_url(public_url)
        self.adapters: dict[str, Adapter] = dict(adapters or {})
        # An in-app delivery is sent by putting it in the inbox (chimeway.engine.inbox).
        self.adapters.setdefault("in_app", InboxAdapter())
        #: Sends the channels without an adapter of their own; ``None``: such a channel is
        #: refused (at worker start, and by each send), never silently "delivered".
        self.default_adapter: Adapter | None = default_adapter
        for channel, adapter in [*self.adapters.items(), ("default_adapter", default_adapter)]:
            address = getattr(adapter, "address", None)
            if address is not None and address not in ADDRESS_FIELDS:
                raise ConfigurationError(
                    f"the adapter for {channel!r} has address {address!r}; "
                    f"expected one of {sorted(ADDRESS_FIELDS)} or None"
                )
        #: Feedback providers by name: ``POST /v1/webhooks/{name}``, ``cw.webhooks.process``.
        self.webhook_providers = providers_by_name(*webhook_providers)
        #: Concurrent webhooks' events share a transaction (engine/webhooks.py).
        self.webhook_ingress: GroupCommit[Any, Any] = GroupCommit()
        self.content_schemas = content_schemas or ContentSchemas.default()
        self.notifiers: dict[str, Notifier] = {}
        for notifier in notifiers:
            self.register_notifier(notifier)
        self.catalog = Catalog()
        self.deferrer = Deferrer(settings.delivery_batch_size)
        self.senders = Senders()
        #: This process's beat while it holds claimed deliveries.
        self.liveness = Liveness(
            lambda: self.pool.connection(),  # noqa: PLW0108 (the pool opens on first use)
            interval=min(max(settings.stuck_after / 10, dt.timedelta(seconds=1)), BEAT_MAX),
        )
        self._pool_sizes = (pool_min_size, pool_max_size)
        self._pool_timeout = pool_timeout
        self._pool: ConnectionPool[Conn] | None = None
        self._deliver_pool: ConnectionPool[Conn] | None = None
        self._pool_lock = threading.Lock()

    # -- connections -------------------------------------------------------------------

    @property
    def pool_timeout(self) -> float:
        """How long a caller waits for a connection of the engine's pools (seconds)."""
        return self._pool_timeout

    @property
    def pool(self) -> ConnectionPool[Conn]:
        pool = self._pool
        return pool if pool is not None else self._open_pool()

    @property
    def deliver_pool(self) -> ConnectionPool[Conn]:
        """The delivery path's pool: claims and records (with the progression they carry)
        run on connections set for them (:func:`~chimeway.engine.connections.tune_for_delivery`).
        Nothing else runs on it."""
        pool = self._deliver_pool
        return pool if pool is not None else self._open_pool(deliver=True)

    def _open_pool(self, *, deliver: bool = False) -> ConnectionPool[Conn]:
        with self._pool_lock:  # worker threads may ask for it at the same time
            pool = self._deliver_pool if deliver else self._pool
            if pool is not None:
                return pool
            low, high = self._pool_sizes
            pool = ConnectionPool(
                self.database_url,
                min_size=low,
                max_size=high,
                open=True,
                name="chimeway-deliver" if deliver else "chimeway",
                timeout=self._pool_timeout,
                # Connections broken by a server restart are replaced, not handed out.
                check=connections.IdleCheck(),
                configure=connections.tune_for_delivery if deliver else connections.replanning,
                kwargs={"prepare_threshold": 0} if deliver else None,
            )
            if deliver:
                self._deliver_pool = pool
            else:
                self._pool = pool
        return pool

    def job_pool(self, **options: Any) -> AsyncConnectionPool[Any]:
        """The pool Procrastinate opens for a worker, sized like ours."""
        low, high = self._pool_sizes
        return AsyncConnectionPool(
            **{
                **options,
                "min_size": low,
                "max_size": high,
                "name": "chimeway-jobs",
                # Procrastinate pings every connection it takes (two extra round trips per
                # job: its fetch and its finish); ping only the ones that sat idle.
                "check": connections.AsyncIdleCheck(),
                # Each of its statements on this pool is one call of one of its functions:
                # in autocommit a fetch or a finish is one round trip, not BEGIN, the call
                # and COMMIT.
                "configure": connections.autocommit,
            }
        )

    def resize_pool(self, max_size: int) -> None:
        """Grow the pool to at least ``max_size`` connections (a worker needs one per job)."""
        low, high = self._pool_sizes
        if max_size > high:
            self._pool_sizes = (low, max_size)
            for pool in (self._pool, self._deliver_pool):
                if pool is not None:
                    pool.resize(low, max_size)

    @contextmanager
    def transaction(self, conn: Conn | None = None) -> Iterator[Conn]:
        """The caller's connection inside a savepoint, or a pool connection committing at
        the end; psycopg errors Chimeway can explain come out as Chimeway errors."""
        if conn is not None:
            check_sync(conn)
        with translated(), logbook.held():
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

    def close(self) -> None:
        self.liveness.close()
        self.senders.close()
        for pool in (self._pool, self._deliver_pool):
            if pool is not None:
                pool.close()
        self._pool = self._deliver_pool = None

    # -- registries --------------------------------------------------------------------

    def register_notifier(self, notifier: type[Notifier] | Notifier) -> Notifier:
        resolved = resolve_notifier(notifier)
        self.notifiers[resolved.key] = resolved
        return resolved

    def notifier(self, key: str) -> Notifier:
        try:
            return self.notifiers[key]
        except KeyError:
            known = ", ".join(sorted(self.notifiers)) or "none"
            raise NotFound(
                f"no notifier {preview(key)} is registered (registered: {known})"
            ) from None

    def adapter_for(self, channel: str) -> Adapter:
        """The channel's adapter; for a channel without one, an adapter that refuses every
        send with a :class:`ConfigurationError` naming the channel (recorded as the
        attempt's error and retried: the right worker may have it), never a silent one."""
        adapter = self.adapters.get(channel, self.default_adapter)
        return adapter if adapter is not None else Unconfigured(channel)

    def address_for(self, channel: str) -> str | None:
        """The profile field (``email``, ``phone``) the channel's adapter sends to, if any."""
        adapter = self.adapters.get(channel, self.default_adapter)
        address = getattr(adapter, "address", None)
        return address if isinstance(address, str) else None

    def feedback_provider(self, name: str) -> FeedbackProvider:
        try:
            return self.webhook_providers[name]
        except KeyError:
            known = ", ".join(sorted(self.webhook_providers)) or "none"
            raise NotFound(f"no webhook provider {name!r} (registered: {known})") from None

    def retry_policy(self, channel: str) -> RetryPolicy:
        return self.settings.retry_policy(channel)


def _public_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"public_url must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError("public_url must not have a query or a fragment")
    return value.rstrip("/")


class Unconfigured:
    """What sends a channel that has no adapter: nothing. Every send fails, naming it."""

    name = "unconfigured"

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def deliver(self, request: DeliveryRequest) -> Sent:
        raise ConfigurationError(
            f"no adapter for channel {self.channel!r}: pass adapters={{{self.channel!r}: ...}} "
            "to Chimeway (or a default_adapter)"
        )
