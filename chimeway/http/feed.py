"""The live side of the inbox: one LISTEN connection per process fanned out to every open
stream (design §14).

A :class:`Hub` holds the open streams by inbox. While at least one is open it keeps one
connection listening on ``chimeway_inbox`` and a task that takes the payloads received so
far as one batch: it keeps those addressed to an open inbox (payloads carry a routing key,
so changes nobody watches cost no query), reads the new items and the changed inboxes'
counts in one transaction, and puts the events in each stream's queue. While a batch is
read, the next one gathers. The last stream to close stops both.

A lost connection is opened again with backoff; the streams are then told to reload, since
changes made while nobody listened were not announced. A stream whose client does not keep
up (its queue is full) is closed: the client reconnects and replays what it missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from starlette.concurrency import run_in_threadpool

from chimeway import logs
from chimeway.engine import inbox
from chimeway.engine.context import Engine
from chimeway.results import InboxCounts, InboxItem

logger = logging.getLogger(__name__)

#: Events a stream may hold before it is closed as too slow.
QUEUE_SIZE = 1000
RECONNECT_FIRST = 0.2
RECONNECT_CAP = 10.0


#: TCP keepalives, so that a connection to a server that vanished is noticed.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5}


@dataclass(frozen=True)
class Event:
    """What a stream sends: ``item`` (a new item), ``counts``, ``marked`` (items changed
    elsewhere: reload what is shown) or ``reload`` (events may have been missed)."""

    name: str
    item: InboxItem | None = None
    counts: InboxCounts | None = None
    action: str | None = None


@dataclass(eq=False)
class Subscriber:
    """One open stream: the inbox it shows and its queue of events (``None`` closes it)."""

    tenant_id: str
    recipient_id: str
    key: str
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def put(self, event: Event | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._close()

    def _close(self) -> None:
        # Make room for the end of the stream; the client reconnects and replays.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Hub:
    """The open streams of one process and the one connection that wakes them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._by_key: dict[str, set[Subscriber]] = {}
        self._payloads: list[str] = []
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def subscribe(self, tenant_id: str, recipient_id: str) -> Subscriber:
        """Register a stream; returns once the process listens, so every change committed
        from then on reaches it."""
        key = inbox.routing_key(tenant_id, recipient_id)
        subscriber = Subscriber(tenant_id, recipient_id, key)
        self._by_key.setdefault(key, set()).add(subscriber)
        if not self._tasks:
            self._listening = asyncio.Event()
            self._wake = asyncio.Event()
            self._payloads = []
            self._tasks = [
                asyncio.create_task(self._listen(), name="chimeway-inbox-listen"),
                asyncio.create_task(self._dispatch(), name="chimeway-inbox-dispatch"),
            ]
        await self._listening.wait()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a stream; the last one stops the listening."""
        group = self._by_key.get(subscriber.key)
        if group is not None:
            group.discard(subscriber)
            if not group:
                del self._by_key[subscriber.key]
        if not self._by_key:
            self._stop()

    async def close(self) -> None:
        """End every stream and stop listening."""
        for group in list(self._by_key.values()):
            for subscriber in group:
                subscriber.put(None)
        self._by_key.clear()
        tasks = self._stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self) -> list[asyncio.Task[None]]:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    # -- the connection ------------------------------------------------------------------

    async def _listen(self) -> None:
        wait, lost = RECONNECT_FIRST, False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    make_conninfo(self._engine.database_url, **KEEPALIVES), autocommit=True
                )
                async with conn:
                    await inbox.listen(conn)
                    self._listening.set()
                    if lost:
                        self._broadcast(Event("reload"))
                        lost, wait = False, RECONNECT_FIRST
                    async for notice in conn.notifies():
                        self._payloads.append(notice.payload)
                        self._wake.set()
            except Exception as exc:  # a lost server, a refused connection (or a bug): again
                logger.warning(
                    "the inbox's LISTEN connection failed; connecting again",
                    extra={"action": "inbox.listen_failed"},
                    exc_info=logs.withheld(exc),
                )
            # Streams wait for the first connection only; later ones are announced by a reload.
            self._listening.set()
            lost = True
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT_CAP)

    # -- fan-out -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._payloads = self._payloads, []
            try:
                await self._deliver(batch)
            except Exception as exc:
                logger.error(
                    "inbox changes could not be read; streams reload",
                    extra={"action": "inbox.dispatch_failed", "payloads": len(batch)},
                    exc_info=logs.withheld(exc),
                )
                self._broadcast(Event("reload"))

    async def _deliver(self, payloads: Iterable[str]) -> None:
        item_ids: list[uuid.UUID] = []
        marked: dict[str, set[str]] = {}
        for payload in payloads:
            change = inbox.parse_payload(payload)
            if change is None or change.key not in self._by_key:
                continue
            if change.notification_id is not None:
                item_ids.append(change.notification_id)
            if change.action is not None:
                marked.setdefault(change.key, set()).add(change.action)
        if not item_ids and not marked:
            return
        inboxes = {
            (s.tenant_id, s.recipient_id) for key in marked for s in self._by_key.get(key, ())
        }
        new, counted = await run_in_threadpool(
            inbox.updates, self._engine, item_ids, sorted(inboxes)
        )
        for addressed in new:
            for s in self._subscribers(addressed.tenant_id, addressed.recipient_id):
                s.put(Event("item", item=addressed.item))
        for key, actions in marked.items():
            for s in self._by_key.get(key, ()):
                for action in sorted(actions):
                    s.put(Event("marked", action=action))
        for (tenant_id, recipient_id), counts in counted.items():
            for s in self._subscribers(tenant_id, recipient_id):
                s.put(Event("counts", counts=counts))

    def _subscribers(self, tenant_id: str, recipient_id: str) -> list[Subscriber]:
        key = inbox.routing_key(tenant_id, recipient_id)
        return [
            s
            for s in self._by_key.get(key, ())
            if s.tenant_id == tenant_id and s.recipient_id == recipient_id
        ]

    def _broadcast(self, event: Event) -> None:
        for group in self._by_key.values():
            for subscriber in group:
                subscriber.put(event)


def encode(event: Event) -> str:
    """The event in the text/event-stream format."""
    lines = []
    data: dict[str, Any]
    if event.item is not None:
        lines.append(f"id: {event.item.cursor}")
        data = item_json(event.item)
    elif event.counts is not None:
        data = counts_json(event.counts)
    elif event.action is not None:
        data = {"action": event.action}
    else:
        data = {}
    lines.append(f"event: {event.name}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


def item_json(item: InboxItem) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "cursor": item.cursor,
        "category": item.category,
        "content": item.content,
        "created_at": item.created_at.isoformat(),
        "delivered_at": item.delivered_at.isoformat(),
        "seen_at": _iso(item.seen_at),
        "read_at": _iso(item.read_at),
        "archived_at": _iso(item.archived_at),
    }


def counts_json(counts: InboxCounts) -> dict[str, int]:
    return {"unseen": counts.unseen, "unread": counts.unread, "total": counts.total}


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())
