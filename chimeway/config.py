"""Settings: how patiently to retry, when maintenance runs, how long history is kept, how
deliveries are batched.

Plain frozen dataclasses, validated when built; :class:`~chimeway.Chimeway` gathers them into
one :class:`Settings` that the engine reads. :class:`ChimewaySettings` reads the same knobs
from ``CHIMEWAY_*`` environment variables (a 12-factor deploy), named like the
``Chimeway(...)`` arguments; an argument given in code wins over the environment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pydantic
from pydantic_settings import BaseSettings, SettingsConfigDict

from chimeway.errors import ConfigurationError, InvalidArgument

#: Where every command and ``Chimeway()`` look for the database URL when none is given.
ENV_DATABASE_URL = "CHIMEWAY_DATABASE_URL"
#: Where ``Chimeway()`` looks for the secret that signs tokens when none is given.
ENV_SECRET = "CHIMEWAY_SECRET"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a channel's temporary failures are retried."""

    max_attempts: int = 5
    base_delay: dt.timedelta = dt.timedelta(seconds=5)
    max_delay: dt.timedelta = dt.timedelta(hours=1)
    jitter: float = 0.5  # up to this fraction of each delay is removed at random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgument("max_attempts must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument("jitter must be between 0 and 1")

    def delay(self, attempt_number: int) -> dt.timedelta:
        """Wait before the attempt after ``attempt_number``: exponential, capped, jittered."""
        exponential = self.base_delay.total_seconds() * 2.0 ** min(attempt_number - 1, 1000)
        capped = min(exponential, self.max_delay.total_seconds())
        return dt.timedelta(seconds=capped * (1 - self.jitter * random.random()))


@dataclass(frozen=True)
class Maintenance:
    """When maintenance runs and what it considers lost."""

    sweep_cron: str = "* * * * *"  # every minute; a 6th field gives seconds
    stalled_cron: str = "* * * * *"
    #: A worker whose heartbeat is older than this is dead; its running jobs are retried.
    stalled_after: dt.timedelta = dt.timedelta(seconds=60)
    #: A ready delivery not sent for this long (or a retry this overdue) is re-driven.
    redrive_after: dt.timedelta = dt.timedelta(minutes=5)
    #: Waits due within this horizon get their timer job; later ones are armed by a sweep
    #: when they come within it. This keeps Procrastinate's queue to the near future: a
    #: million runs waiting for days must not mean a million scheduled jobs, which would
    #: slow down every job fetch. Keep it well above the sweep interval.
    timer_horizon: dt.timedelta = dt.timedelta(minutes=10)
    batch_size: int = 500


@dataclass(frozen=True)
class Throttle:
    """At most ``limit`` sends per ``per`` on a channel, shared by every worker through
    PostgreSQL (a provider's rate limit). Channels whose throttles name the same ``key``
    share one budget (one provider account); by default the key is the channel's name.
    A delivery over the limit waits for the next free instant; it is never dropped."""

    limit: int
    per: dt.timedelta = dt.timedelta(seconds=1)
    key: str | None = None

    def __post_init__(self) -> None:
        _whole("Throttle.limit", self.limit)
        if not isinstance(self.per, dt.timedelta) or self.per <= dt.timedelta(0):
            raise InvalidArgument(f"Throttle.per must be a positive timedelta, not {self.per!r}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key.strip()):
            raise InvalidArgument(f"Throttle.key must be a non-blank string, not {self.key!r}")


@dataclass(frozen=True)
class Retention:
    """How long finished work is kept before the periodic ``prune`` removes it (``chimeway
    prune`` does it on demand). An age of ``None`` keeps that kind forever. Each kind is
    removed in small transactions of ``batch_size`` rows that skip rows another transaction
    holds, so pruning never makes a worker wait (see docs/production.md)."""

    #: When the ``prune`` task runs (hourly by default; ``None``: never on its own).
    cron: str | None = "23 * * * *"
    #: Finished Procrastinate jobs (failed, cancelled, aborted; the worker deletes successful
    #: ones as they finish) with their events, counted from their last event; and the
    #: bookkeeping rows of periodic tasks deferred longer ago than this.
    jobs: dt.timedelta | None = dt.timedelta(days=7)
    #: Events whose deliveries are all terminal and whose runs are all finished, untouched
    #: for this long, with everything under them: notifications (the inbox items too),
    #: deliveries, attempts, runs and their histories.
    history: dt.timedelta | None = dt.timedelta(days=90)
    #: Routed signals (a repeated signal idempotency key is inert only while its signal is
    #: kept).
    signals: dt.timedelta | None = dt.timedelta(days=30)
    #: Processed (or ignored, or failed) provider webhook events (a provider's retry of one
    #: is recognised only while it is kept).
    webhooks: dt.timedelta | None = dt.timedelta(days=30)
    #: Processes that stopped beating this long ago (their claims were taken over long
    #: since). Must be well above any database outage: a claimant removed from the registry
    #: loses the outage protection of its claims.
    processes: dt.timedelta | None = dt.timedelta(days=1)
    batch_size: int = 500

    def __post_init__(self) -> None:
        _whole("batch_size", self.batch_size)
        for name in ("jobs", "history", "signals", "webhooks", "processes"):
            age = getattr(self, name)
            if age is not None and (not isinstance(age, dt.timedelta) or age <= dt.timedelta(0)):
                raise InvalidArgument(f"retention {name} must be a positive timedelta or None")


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the engine reads besides its resources (see :class:`~chimeway.Chimeway`)."""

    retry: Mapping[str, RetryPolicy] = field(default_factory=dict)
    default_retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: How long a delivery may stay ``dispatched`` before another worker may take it over.
    stuck_after: dt.timedelta = dt.timedelta(minutes=5)
    maintenance: Maintenance = field(default_factory=Maintenance)
    retention: Retention = field(default_factory=Retention)
    #: Deliveries planned together share ``deliver_many`` jobs of up to this many; a
    #: ``deliver`` job takes queued ones along up to this many.
    delivery_batch_size: int = 50
    #: Calls one process makes at once to an adapter that does not say (``capacity``).
    send_concurrency: int = 32
    #: How long to wait for an adapter that does not say (``timeout``) before giving the
    #: call up as an ``unknown`` failure; under ``stuck_after`` (default: a minute, or a
    #: quarter of ``stuck_after`` if that is less).
    send_timeout: dt.timedelta | None = None
    #: How often a send whose process stopped reporting is taken over before the delivery
    #: is cancelled as ``abandoned`` (the dead-letter end).
    max_takeovers: int = 3
    #: Channel -> its :class:`Throttle`.
    throttles: Mapping[str, Throttle] = field(default_factory=dict)
    #: How long an unsubscribe link stays valid (CAN-SPAM expects 30 days at least).
    unsubscribe_ttl: dt.timedelta = dt.timedelta(days=90)

    def __post_init__(self) -> None:
        _whole("delivery_batch_size", self.delivery_batch_size)
        _whole("send_concurrency", self.send_concurrency)
        _whole("max_takeovers", self.max_takeovers)
        if self.stuck_after <= dt.timedelta(0):
            raise InvalidArgument(f"stuck_after must be positive, not {self.stuck_after}")
        silent = self.retention.processes
        if silent is not None and silent <= self.stuck_after:
            raise InvalidArgument(
                f"retention processes ({silent}) must be longer than stuck_after "
                f"({self.stuck_after}): a claimant is forgotten only long after its claims"
            )
        if self.send_timeout is None:
            object.__setattr__(
                self, "send_timeout", min(dt.timedelta(seconds=60), self.stuck_after / 4)
            )
        if not dt.timedelta(0) < self.deadline < self.stuck_after:
            raise InvalidArgument(
                f"send_timeout must be positive and under stuck_after ({self.stuck_after}), "
                f"not {self.send_timeout}"
            )
        object.__setattr__(self, "retry", MappingProxyType(dict(self.retry)))
        for channel, throttle in self.throttles.items():
            if not isinstance(throttle, Throttle):
                raise InvalidArgument(
                    f"throttles[{channel!r}] must be a Throttle, not {type(throttle).__name__}"
                )
        budgets: dict[str, Throttle] = {}
        for channel, throttle in self.throttles.items():
            key = throttle.key or channel
            other = budgets.setdefault(key, throttle)
            if (other.limit, other.per) != (throttle.limit, throttle.per):
                raise InvalidArgument(
                    f"throttles sharing the key {key!r} must have the same limit and per"
                )
        object.__setattr__(self, "throttles", MappingProxyType(dict(self.throttles)))
        if self.unsubscribe_ttl < dt.timedelta(days=1):
            raise InvalidArgument(
                f"unsubscribe_ttl must be at least a day (links are read late), "
                f"not {self.unsubscribe_ttl}"
            )

    @property
    def deadline(self) -> dt.timedelta:
        """``send_timeout``, filled in."""
        assert self.send_timeout is not None
        return self.send_timeout

    def retry_policy(self, channel: str) -> RetryPolicy:
        return self.retry.get(channel, self.default_retry)

    def throttle_key(self, channel: str) -> str | None:
        """The key of the channel's throttle's budget, or ``None`` when it has none."""
        throttle = self.throttles.get(channel)
        return None if throttle is None else throttle.key or channel


# -- the environment ----------------------------------------------------------------------

#: The prefix of every setting's variable; a nested field joins with ``__``
#: (``CHIMEWAY_MAINTENANCE__BATCH_SIZE``).
ENV_PREFIX = "CHIMEWAY_"
ENV_NESTED = "__"
#: What an optional setting reads as ``None`` (``CHIMEWAY_RETENTION__HISTORY=none``).
ENV_NONE = "none"


class ChimewaySettings(BaseSettings):
    """The ``Chimeway(...)`` arguments that may come from the environment, each from
    ``CHIMEWAY_<ARGUMENT>`` (``CHIMEWAY_STUCK_AFTER=PT10M``); the fields of ``maintenance``,
    ``retention`` and ``default_retry`` from ``CHIMEWAY_<ARGUMENT>__<FIELD>``
    (``CHIMEWAY_RETENTION__HISTORY=P30D``). Durations are ISO 8601 (``PT90S``, ``P7D``) or
    ``[D days, ]HH:MM:SS``; ``none`` turns an optional one off. ``Chimeway()`` reads these
    for every argument it is not given; ``ChimewaySettings()`` shows what it would read."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        env_parse_none_str=ENV_NONE,
        frozen=True,
        extra="ignore",
    )

    pool_min_size: int = pydantic.Field(
        default=1, ge=0, description="Connections the pool keeps open for triggers and reads."
    )
    pool_max_size: int = pydantic.Field(
        default=10, ge=1, description="Connections the pool may open (the delivery pool too)."
    )
    pool_timeout: float = pydantic.Field(
        default=30.0, gt=0, description="Seconds to wait for a pool connection before failing."
    )
    stuck_after: dt.timedelta = pydantic.Field(
        default=Settings.stuck_after,
        description="How long a delivery may stay `dispatched` before another worker may "
        "take it over.",
    )
    delivery_batch_size: int = pydantic.Field(
        default=Settings.delivery_batch_size,
        description="Deliveries planned together share `deliver_many` jobs of up to this many; "
        "a `deliver` job takes queued ones along up to this many.",
    )
    send_concurrency: int = pydantic.Field(
        default=Settings.send_concurrency,
        description="Calls one process makes at once to an adapter that does not say.",
    )
    send_timeout: dt.timedelta | None = pydantic.Field(
        default=Settings.send_timeout,
        description="Deadline of a send to an adapter that does not say (none: a minute, "
        "or a quarter of `stuck_after` if less).",
    )
    max_takeovers: int = pydantic.Field(
        default=Settings.max_takeovers,
        description="Takeovers of a silent send before the delivery is cancelled `abandoned`.",
    )
    unsubscribe_ttl: dt.timedelta = pydantic.Field(
        default=Settings.unsubscribe_ttl, description="How long an unsubscribe link stays valid."
    )
    default_retry: RetryPolicy = pydantic.Field(
        default_factory=RetryPolicy, description="Retries of a channel without its own policy."
    )
    maintenance: Maintenance = pydantic.Field(
        default_factory=Maintenance, description="When maintenance runs."
    )
    retention: Retention = pydantic.Field(
        default_factory=Retention, description="How long finished work is kept."
    )

    @classmethod
    def from_environment(cls) -> ChimewaySettings:
        """The settings of the process environment, or a
        :class:`~chimeway.ConfigurationError` that names the variable that is wrong."""
        try:
            return cls()
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ENV_PREFIX + ENV_NESTED.join(str(p) for p in first["loc"]).upper()
            raise ConfigurationError(f"{where}: {first['msg']}") from None
        except InvalidArgument as exc:
            raise ConfigurationError(f"{ENV_PREFIX}* settings: {exc.message}") from None


#: What each nested field means, for the documented table.
_NESTED_HELP: Mapping[str, str] = {
    "default_retry.max_attempts": "Attempts before a delivery is cancelled `retries_exhausted`.",
    "default_retry.base_delay": "Wait before the second attempt; doubled for each next one.",
    "default_retry.max_delay": "The longest wait between attempts.",
    "default_retry.jitter": "Up to this fraction of each wait is removed at random.",
    "maintenance.sweep_cron": "When the sweep runs (due waits, deferred and stuck "
    "deliveries); a 6th field gives seconds.",
    "maintenance.stalled_cron": "When jobs of dead workers are retried.",
    "maintenance.stalled_after": "A worker silent this long is dead.",
    "maintenance.redrive_after": "A ready delivery not sent for this long is re-driven.",
    "maintenance.timer_horizon": "Waits due within this get their timer job.",
    "maintenance.batch_size": "Rows one sweep transaction handles.",
    "retention.cron": "When the prune runs (none: never on its own).",
    "retention.jobs": "Finished jobs are kept this long (none: forever).",
    "retention.history": "Finished events, deliveries and runs are kept this long.",
    "retention.signals": "Routed signals are kept this long.",
    "retention.webhooks": "Processed provider webhook events are kept this long.",
    "retention.processes": "Stopped processes are forgotten after this long.",
    "retention.batch_size": "Rows one prune transaction removes.",
}


@dataclass(frozen=True)
class EnvironmentVariable:
    """One documented setting: its variable, the ``Chimeway(...)`` argument (dotted for a
    field of one), its default as the variable would spell it, and what it does."""

    name: str
    argument: str
    default: str
    description: str


def environment_variables() -> list[EnvironmentVariable]:
    """Every variable :class:`ChimewaySettings` reads, in declaration order."""
    out = []
    for name, info in ChimewaySettings.model_fields.items():
        nested = info.annotation if dataclasses.is_dataclass(info.annotation) else None
        if nested is None:
            out.append(
                EnvironmentVariable(
                    ENV_PREFIX + name.upper(),
                    name,
                    env_value(info.default),
                    info.description or "",
                )
            )
            continue
        for sub in dataclasses.fields(nested):
            default = sub.default_factory() if callable(sub.default_factory) else sub.default
            out.append(
                EnvironmentVariable(
                    f"{ENV_PREFIX}{name.upper()}{ENV_NESTED}{sub.name.upper()}",
                    f"{name}.{sub.name}",
                    env_value(default),
                    _NESTED_HELP[f"{name}.{sub.name}"],
                )
            )
    return out


def env_value(value: object) -> str:
    """``value`` as a variable would spell it (durations in ISO 8601)."""
    if value is None:
        return ENV_NONE
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    return str(value)


def _iso_duration(value: dt.timedelta) -> str:
    days, seconds = value.days, value.seconds + value.microseconds / 1_000_000
    if seconds == 0:
        return f"P{days}D"
    amount = f"{seconds:g}" if seconds % 1 else str(int(seconds))
    if seconds % 3600 == 0:
        amount, unit = str(int(seconds // 3600)), "H"
    elif seconds % 60 == 0:
        amount, unit = str(int(seconds // 60)), "M"
    else:
        unit = "S"
    return f"P{days}DT{amount}{unit}" if days else f"PT{amount}{unit}"


def environment_table() -> str:
    """The markdown table of :func:`environment_variables` that docs/production.md shows."""
    rows = [
        "| Variable | `Chimeway(...)` argument | Default | What it sets |",
        "| --- | --- | --- | --- |",
    ]
    rows += [
        f"| `{v.name}` | `{v.argument}` | `{v.default}` | {v.description} |"
        for v in environment_variables()
    ]
    return "\n".join(rows) + "\n"
