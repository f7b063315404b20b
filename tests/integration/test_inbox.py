"""The in-app inbox through ``cw.inbox`` (design §14): what is an item, the feed's keyset
pagination, counts, every mark action, the signals the first seen/read emit (once), what
they cancel, tenant and recipient isolation, tokens, and the NOTIFY that wakes streams."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from chimeway import (
    Chimeway,
    ConfigurationError,
    InboxAdapter,
    InboxMarked,
    InvalidArgument,
    InvalidToken,
    Step,
    TokenExpired,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.db import Conn
from chimeway.engine import inbox as engine_inbox
from chimeway.testing import drain
from tests.integration.conftest import count
from tests.integration.notifiers import Welcome, WithWorkflow

SECRET = "an inbox secret that is long enough to sign tokens"
READ = "chimeway.notification.read"
SEEN = "chimeway.notification.seen"

ESCALATION = Workflow(
    key="escalation",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[WaitUntil(delay=600, to_step="email", cancel_signals=[READ])],
        ),
        Step("email", channel="email"),
    ],
)


def notify(
    cw: Chimeway,
    users: list[str],
    *,
    tenant: str = "t",
    channels: tuple[str, ...] = ("in_app",),
    conn: Conn | None = None,
) -> list[uuid.UUID]:
    """Trigger Welcome for ``users`` and send it; the notification ids, in user order."""
    result = cw.trigger(
        Welcome,
        {"users": users, "channels": list(channels)},
        tenant_id=tenant,
        idempotency_key=str(uuid.uuid4()),
        conn=conn,
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=conn)
    return result.notification_ids


def signals(db: Conn | str, event: str | None = None) -> int:
    where = "" if event is None else f" WHERE event_name = '{event}'"
    return count(db, f"SELECT count(*) FROM chimeway_signals{where}")


# -- what an item is --------------------------------------------------------------------------


def test_an_item_is_a_notification_whose_in_app_delivery_was_sent(
    tx_cw: Chimeway, db: Conn
) -> None:
    result = tx_cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered)
    assert tx_cw.inbox.list("t", "ana", conn=db).items == []  # planned, not sent yet
    drain(tx_cw, conn=db)
    page = tx_cw.inbox.list("t", "ana", conn=db)
    assert [i.id for i in page.items] == result.notification_ids
    item = page.items[0]
    assert item.content == {
        "headline": "Welcome ana",
        "body": "Body",
        "primary_action": {"label": "Open", "url": "/x"},
    }
    assert item.category == "account"
    assert (item.seen_at, item.read_at, item.archived_at) == (None, None, None)
    assert item.delivered_at >= item.created_at
    assert page.next_cursor is None


def test_email_only_notifications_are_not_items(tx_cw: Chimeway, db: Conn) -> None:
    notify(tx_cw, ["ana"], channels=("email",), conn=db)
    assert tx_cw.inbox.list("t", "ana", conn=db).items == []
    assert tx_cw.inbox.counts("t", "ana", conn=db).total == 0


def test_the_in_app_channel_goes_to_the_inbox_without_an_adapter(
    make_tx_cw: Callable[..., Chimeway], db: Conn
) -> None:
    cw = make_tx_cw(adapters={})
    assert isinstance(cw.engine.adapter_for("in_app"), InboxAdapter)
    [notification] = notify(cw, ["ana"], conn=db)
    assert [i.id for i in cw.inbox.list("t", "ana", conn=db).items] == [notification]


# -- the feed -------------------------------------------------------------------------------


def test_pages_neither_repeat_nor_skip_items_while_new_ones_arrive(cw: Chimeway) -> None:
    older = [notify(cw, ["ana"])[0] for _ in range(7)]
    first = cw.inbox.list("t", "ana", limit=3)
    assert [i.id for i in first.items] == older[::-1][:3]  # newest first
    newer = [notify(cw, ["ana"])[0] for _ in range(4)]  # arrive while paging
    seen = [i.id for i in first.items]
    cursor = first.next_cursor
    while cursor is not None:
        page = cw.inbox.list("t", "ana", limit=3, cursor=cursor)
        seen += [i.id for i in page.items]
        cursor = page.next_cursor
    assert seen == older[::-1]  # every older item once, in order: no duplicate, no gap
    top = cw.inbox.list("t", "ana", limit=4)
    assert [i.id for i in top.items] == newer[::-1]  # the new ones are at the top


def test_an_items_cursor_lists_what_follows_it(tx_cw: Chimeway, db: Conn) -> None:
    notify(tx_cw, ["ana"], conn=db)
    notify(tx_cw, ["ana"], conn=db)
    items = tx_cw.inbox.list("t", "ana", conn=db).items
    after = tx_cw.inbox.list("t", "ana", cursor=items[0].cursor, conn=db)
    assert [i.id for i in after.items] == [items[1].id]
    assert engine_inbox.parse_cursor(items[0].cursor) == (items[0].delivered_at, items[0].id)


def test_an_item_that_reaches_the_inbox_late_comes_in_at_the_top(cw: Chimeway) -> None:
    """Ordered by arrival in the inbox, not by creation: a notification created first but
    sent later is not buried behind pages already read."""
    early = cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="early")
    assert isinstance(early, Triggered)
    later = cw.trigger(Welcome, {"users": ["ana"]}, tenant_id="t", idempotency_key="later")
    assert isinstance(later, Triggered)
    cw.deliver(later.delivery_ids[0])
    cw.deliver(early.delivery_ids[0])
    items = cw.inbox.list("t", "ana").items
    assert [i.id for i in items] == [*early.notification_ids, *later.notification_ids]


def test_filters_unread_unseen_and_archived(tx_cw: Chimeway, db: Conn) -> None:
    a, b, c = (notify(tx_cw, ["ana"], conn=db)[0] for _ in range(3))
    tx_cw.inbox.mark("t", "ana", [a], "read", conn=db)
    tx_cw.inbox.mark("t", "ana", [b], "seen", conn=db)
    tx_cw.inbox.mark("t", "ana", [c], "archived", conn=db)

    def ids(**options: Any) -> set[uuid.UUID]:
        return {i.id for i in tx_cw.inbox.list("t", "ana", conn=db, **options).items}

    assert ids() == {a, b}
    assert ids(status="unread") == {b}
    assert ids(status="unseen") == set()
    assert ids(archived=True) == {c}
    assert ids(archived=True, status="unseen") == {c}


def test_counts_are_over_unarchived_items(tx_cw: Chimeway, db: Conn) -> None:
    a, b, c, _ = (notify(tx_cw, ["ana"], conn=db)[0] for _ in range(4))
    counts = tx_cw.inbox.counts("t", "ana", conn=db)
    assert (counts.unseen, counts.unread, counts.total) == (4, 4, 4)
    tx_cw.inbox.mark("t", "ana", [a], "seen", conn=db)
    tx_cw.inbox.mark("t", "ana", [b], "read", conn=db)
    tx_cw.inbox.mark("t", "ana", [c], "archived", conn=db)
    counts = tx_cw.inbox.counts("t", "ana", conn=db)
    assert (counts.unseen, counts.unread, counts.total) == (1, 2, 3)


# -- marks ----------------------------------------------------------------------------------


def test_each_mark_action_and_its_idempotent_repeat(tx_cw: Chimeway, db: Conn) -> None:
    [n] = notify(tx_cw, ["ana"], conn=db)

    def item() -> Any:
        [found] = [
            i
            for archived in (False, True)
            for i in tx_cw.inbox.list("t", "ana", archived=archived, conn=db).items
        ]
        return found

    steps: list[tuple[str, Callable[[Any], bool]]] = [
        ("seen", lambda i: i.seen_at is not None and i.read_at is None),
        ("read", lambda i: i.read_at is not None),
        ("unread", lambda i: i.read_at is None and i.seen_at is not None),
        ("archived", lambda i: i.archived_at is not None),
        ("unarchived", lambda i: i.archived_at is None),
    ]
    for action, check in steps:
        assert tx_cw.inbox.mark("t", "ana", [n], action, conn=db) == InboxMarked(  # type: ignore[arg-type]
            action,  # type: ignore[arg-type]
            [n],
            int(action in ("seen", "read")),
        )
        assert check(item()), action
        again = tx_cw.inbox.mark("t", "ana", [str(n)], action, conn=db)  # type: ignore[arg-type]
        assert again.changed == [] and again.signals == 0, action


def test_read_also_sees_and_mark_all_marks_every_item(tx_cw: Chimeway, db: Conn) -> None:
    ids = [notify(tx_cw, ["ana"], conn=db)[0] for _ in range(3)]
    done = tx_cw.inbox.mark("t", "ana", "all", "read", conn=db)
    assert sorted(done.changed) == sorted(ids)
    assert done.signals == 6  # a seen and a read for each
    counts = tx_cw.inbox.counts("t", "ana", conn=db)
    assert (counts.unseen, counts.unread) == (0, 0)
    assert tx_cw.inbox.mark("t", "ana", "all", "read", conn=db).changed == []


def test_the_first_seen_and_read_emit_one_signal_each_ever(tx_cw: Chimeway, db: Conn) -> None:
    [n] = notify(tx_cw, ["ana"], conn=db)
    tx_cw.inbox.mark("t", "ana", [n], "seen", conn=db)
    tx_cw.inbox.mark("t", "ana", [n], "seen", conn=db)
    assert (signals(db, SEEN), signals(db, READ)) == (1, 0)
    tx_cw.inbox.mark("t", "ana", [n], "read", conn=db)
    tx_cw.inbox.mark("t", "ana", [n], "unread", conn=db)
    again = tx_cw.inbox.mark("t", "ana", [n], "read", conn=db)
    assert again.changed == [n] and again.signals == 0  # read again, but not for the first time
    assert (signals(db, SEEN), signals(db, READ)) == (1, 1)
    row = db.execute(
        "SELECT tenant_id, actor_id, payload FROM chimeway_signals WHERE event_name = %s",
        [READ],
    ).fetchone()
    assert row == ("t", "ana", {"notification_id": str(n)})
    jobs = count(
        db,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:route_signal'",
    )
    assert jobs == 2


def test_concurrent_reads_emit_one_signal(cw: Chimeway) -> None:
    [n] = notify(cw, ["ana"])
    barrier = threading.Barrier(4)
    results: list[InboxMarked] = []

    def read() -> None:
        barrier.wait()
        results.append(cw.inbox.mark("t", "ana", [n], "read"))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r.changed) for r in results) == [0, 0, 0, 1]
    assert (signals(cw.database_url, READ), signals(cw.database_url, SEEN)) == (1, 1)


def test_reading_the_notice_cancels_the_escalation(
    tx_cw: Chimeway, db: Conn, adapters: Any
) -> None:
    result = tx_cw.trigger(
        WithWorkflow(ESCALATION), {"users": ["ana"]}, tenant_id="t", idempotency_key="k", conn=db
    )
    assert isinstance(result, Triggered)
    drain(tx_cw, conn=db)
    [run] = result.run_ids
    assert tx_cw.workflows.explain("t", run, conn=db).state == "waiting"
    tx_cw.inbox.mark("t", "ana", result.notification_ids, "read", conn=db)
    drain(tx_cw, conn=db)
    explained = tx_cw.workflows.explain("t", run, conn=db)
    assert (explained.state, explained.terminal_reason) == ("completed", "wait_cancelled_by_signal")
    assert count(db, "SELECT count(*) FROM chimeway_deliveries WHERE channel = 'email'") == 0
    assert adapters["email"].requests == []


# -- isolation ------------------------------------------------------------------------------


def test_a_recipient_sees_and_marks_only_their_own_items(tx_cw: Chimeway, db: Conn) -> None:
    [ana] = notify(tx_cw, ["ana"], conn=db)
    [bob] = notify(tx_cw, ["bob"], conn=db)
    [other_tenant] = notify(tx_cw, ["ana"], tenant="t2", conn=db)
    assert [i.id for i in tx_cw.inbox.list("t", "ana", conn=db).items] == [ana]
    assert [i.id for i in tx_cw.inbox.list("t2", "ana", conn=db).items] == [other_tenant]
    assert tx_cw.inbox.counts("t", "bob", conn=db).total == 1
    # Another recipient's or tenant's ids are left alone, exactly like missing ones.
    done = tx_cw.inbox.mark("t", "ana", [bob, other_tenant, uuid.uuid4()], "read", conn=db)
    assert done.changed == [] and done.signals == 0
    assert tx_cw.inbox.mark("t", "ana", "all", "archived", conn=db).changed == [ana]
    assert tx_cw.inbox.counts("t", "bob", conn=db).total == 1
    assert tx_cw.inbox.counts("t2", "ana", conn=db).total == 1
    assert signals(db) == 0


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda cw: cw.inbox.list("t", "", conn=None), "recipient_id must be a non-blank"),
        (lambda cw: cw.inbox.list(" ", "ana"), "tenant_id must be a non-blank"),
        (lambda cw: cw.inbox.list("t", "ana", status="new"), "status must be one of all"),
        (lambda cw: cw.inbox.list("t", "ana", limit=0), "limit must be an int from 1 to 100"),
        (lambda cw: cw.inbox.list("t", "ana", limit=101), "limit must be an int from 1 to 100"),
        (lambda cw: cw.inbox.list("t", "ana", archived="no"), "archived must be a bool"),
        (lambda cw: cw.inbox.list("t", "ana", cursor="abc"), "cursor is malformed"),
        (lambda cw: cw.inbox.mark("t", "ana", "all", "delete"), "action must be one of seen"),
        (lambda cw: cw.inbox.mark("t", "ana", [], "read"), "must hold 1 to 1000 ids"),
        (lambda cw: cw.inbox.mark("t", "ana", "some", "read"), 'list of ids or "all"'),
        (lambda cw: cw.inbox.mark("t", "ana", ["x"], "read"), r"notification_ids\[0\] is not"),
        (lambda cw: cw.inbox.token("t", "ana", dt.timedelta(0)), "ttl must be a timedelta"),
        (lambda cw: cw.inbox.token("t", "ana", dt.timedelta(days=31)), "at most 30 days"),
    ],
)
def test_bad_arguments_are_refused_with_a_message_naming_them(
    make_tx_cw: Callable[..., Chimeway], call: Callable[[Chimeway], Any], message: str
) -> None:
    cw = make_tx_cw(secret=SECRET)
    with pytest.raises(InvalidArgument, match=message):
        call(cw)


# -- tokens ---------------------------------------------------------------------------------


def test_tokens_name_one_recipient_and_expire(make_tx_cw: Callable[..., Chimeway]) -> None:
    cw = make_tx_cw(secret=SECRET)
    token = cw.inbox.token("t", "ana", dt.timedelta(minutes=5))
    claims = engine_inbox.verify(cw.engine, token)
    assert (claims.tenant_id, claims.recipient_id) == ("t", "ana")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    with pytest.raises(TokenExpired):
        engine_inbox.verify(cw.engine, token, now=later)
    other = make_tx_cw(secret="another secret that is long enough to sign things")
    with pytest.raises(InvalidToken, match="signature does not match"):
        engine_inbox.verify(other.engine, token)


def test_a_token_needs_a_secret(
    make_tx_cw: Callable[..., Chimeway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHIMEWAY_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="pass secret="):
        make_tx_cw().inbox.token("t", "ana")
    monkeypatch.setenv("CHIMEWAY_SECRET", SECRET)
    assert make_tx_cw().inbox.token("t", "ana").startswith("v1.")


# -- the NOTIFY that wakes streams ------------------------------------------------------------


def test_arrivals_and_marks_notify_with_ids_only(cw: Chimeway) -> None:
    with psycopg.connect(cw.database_url, autocommit=True) as listener:
        listener.execute("LISTEN chimeway_inbox")
        [n] = notify(cw, ["ana"])
        cw.inbox.mark("t", "ana", [n], "read")
        cw.inbox.mark("t", "ana", [n], "read")  # changes nothing: no notice
        got = [x.payload for x in listener.notifies(timeout=2, stop_after=2)]
        key = engine_inbox.routing_key("t", "ana")
        assert got == [f"item {key} {n}", f"mark {key} read"]
        assert [x.payload for x in listener.notifies(timeout=0.3)] == []
    assert engine_inbox.parse_payload(got[0]) == engine_inbox.Change("item", key, n)
    assert engine_inbox.parse_payload(got[1]) == engine_inbox.Change("mark", key, action="read")
    assert engine_inbox.parse_payload("item x not-a-uuid") is None
    assert engine_inbox.parse_payload("something else") is None
