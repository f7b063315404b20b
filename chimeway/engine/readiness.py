"""What a worker checks and says when it starts: no channel it will send is without an
adapter (nothing is ever "delivered" silently), and one line naming what it runs with."""

from __future__ import annotations

from collections.abc import Sequence

from chimeway.adapters.fallback import provider_name
from chimeway.db import redact_url
from chimeway.engine.context import Engine
from chimeway.errors import ConfigurationError
from chimeway.store import deliveries
from chimeway.store.jobs import QUEUES

DELIVERY_QUEUE = QUEUES["deliver"]


def sends(queues: Sequence[str] | None) -> bool:
    """Whether a worker on ``queues`` (``None``: every queue) sends deliveries."""
    return queues is None or DELIVERY_QUEUE in queues


def check_channels(engine: Engine, queues: Sequence[str] | None = None) -> None:
    """Refuse to start a worker that would send deliveries on a channel it has no adapter
    for: :class:`ConfigurationError` naming the channel(s)."""
    if not sends(queues) or engine.default_adapter is not None:
        return
    with engine.transaction() as conn:
        waiting = deliveries.waiting_by_channel(conn)
    missing = {channel: n for channel, n in waiting.items() if channel not in engine.adapters}
    if missing:
        listed = ", ".join(f"{channel!r} ({n} waiting)" for channel, n in missing.items())
        raise ConfigurationError(
            f"no adapter for channel {listed}: pass adapters={{...}} to your Chimeway "
            "(with --app), or default_adapter=LoggerAdapter() to log them instead"
        )


def startup_line(engine: Engine, queues: Sequence[str] | None, concurrency: int) -> str:
    """``chimeway worker`` on <database, password hidden>: its queues, concurrency and
    adapters by channel."""
    adapters = ", ".join(
        f"{channel}={type(adapter).__name__}({provider_name(adapter)})"
        for channel, adapter in sorted(engine.adapters.items())
    )
    default = engine.default_adapter
    fallback = f"{type(default).__name__}({provider_name(default)})" if default else "none"
    return (
        f"chimeway worker: database {redact_url(engine.database_url)}; "
        f"queues {', '.join(queues) if queues else 'all'}; concurrency {concurrency}; "
        f"adapters {adapters or 'none'}; other channels {fallback}"
    )
