"""The pure parts of the inbox's live side: event encoding, slow streams, cursors, keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest

from chimeway import InboxCounts, InboxItem, InvalidArgument
from chimeway.engine import inbox
from chimeway.http.feed import QUEUE_SIZE, Event, Subscriber, encode

AT = dt.datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=dt.UTC)
ITEM = InboxItem(
    uuid.UUID("2f1c7a56-8a0e-4d0c-9a57-6c3a2f1b0e11"),
    "mentions",
    {"headline": "Hi", "body": "line one\nline two"},
    AT,
    AT,
    None,
    None,
    None,
)


def test_an_item_event_carries_its_cursor_as_the_sse_id_and_one_data_line() -> None:
    text = encode(Event("item", item=ITEM))
    lines = text.split("\n")
    assert lines[0] == f"id: {ITEM.cursor}"
    assert lines[1] == "event: item"
    assert lines[2].startswith("data: ")
    assert lines[3:] == ["", ""]  # the newline in the content is escaped in the JSON
    data = json.loads(lines[2][6:])
    assert data["id"] == str(ITEM.id)
    assert data["content"]["body"] == "line one\nline two"
    assert data["delivered_at"] == AT.isoformat()
    assert data["read_at"] is None


def test_counts_and_marked_events() -> None:
    assert encode(Event("counts", counts=InboxCounts(1, 2, 3))) == (
        'event: counts\ndata: {"unseen":1,"unread":2,"total":3}\n\n'
    )
    assert encode(Event("marked", action="read")) == ('event: marked\ndata: {"action":"read"}\n\n')
    assert encode(Event("reload")) == "event: reload\ndata: {}\n\n"


def test_a_stream_that_does_not_keep_up_is_closed() -> None:
    async def fill() -> list[Event | None]:
        subscriber = Subscriber("t", "ana", inbox.routing_key("t", "ana"))
        for _ in range(QUEUE_SIZE + 1):
            subscriber.put(Event("reload"))
        return [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]

    assert asyncio.run(fill()) == [None]  # its client reconnects and replays


def test_cursors_round_trip_to_the_microsecond_and_refuse_anything_else() -> None:
    assert inbox.parse_cursor(ITEM.cursor) == (AT, ITEM.id)
    for bad in ("", "1.2", f"x{ITEM.cursor}", f"{ITEM.cursor}\n", "99999999999999999.a" * 2):
        with pytest.raises(InvalidArgument, match="cursor is malformed"):
            inbox.parse_cursor(bad)
    with pytest.raises(InvalidArgument, match="cursor is malformed"):
        inbox.parse_cursor(f"999999999999999999.{ITEM.id.hex}")  # 18 digits
    assert inbox.parse_cursor(f"99999999999999999.{ITEM.id.hex}")[0].year == 5138


def test_routing_keys_are_short_stable_and_tell_inboxes_apart() -> None:
    key = inbox.routing_key("t", "ana")
    assert len(key) == 16 and key == inbox.routing_key("t", "ana")
    assert key != inbox.routing_key("t", "bob")
    assert inbox.routing_key("a", "bc") != inbox.routing_key("ab", "c")
