"""The ``*_async`` twins join a psycopg ``AsyncConnection``'s transaction through the one
seam (``db.joined``): the sync engine runs on the same libpq connection, in a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from chimeway import (
    Chimeway,
    Duplicate,
    InvalidNotifier,
    SignalTracked,
    Triggered,
    WrongConnection,
    db,
)
from chimeway.testing import drain
from tests.integration.conftest import Recorders, count
from tests.integration.framework_support import (
    INSERT_ORDER,
    NOTHING,
    PARAMS,
    assert_committed_and_delivered,
    assert_rolled_back,
    create_app_table,
    rows,
)
from tests.integration.notifiers import Welcome

T = TypeVar("T")


def run(url: str, body: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    async def main() -> T:
        async with await psycopg.AsyncConnection.connect(url) as aconn:
            return await body(aconn)

    return asyncio.run(main())


def test_trigger_async_commits_with_the_apps_row_and_the_job_runs(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    cw.register_notifier(Welcome)
    create_app_table(committed_db)

    async def body(aconn: psycopg.AsyncConnection[Any]) -> Triggered | Any:
        await aconn.execute(INSERT_ORDER, ["o1", 42])
        result = await cw.trigger_async(
            "welcome", PARAMS, tenant_id="t1", idempotency_key="k1", conn=aconn
        )
        # Nothing is visible outside before the caller commits.
        assert rows(committed_db) == NOTHING
        await aconn.commit()
        return result

    result = run(committed_db, body)
    assert_committed_and_delivered(cw, committed_db, result, adapters["in_app"])


def test_trigger_async_rolls_back_with_the_callers_transaction(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    create_app_table(committed_db)

    async def body(aconn: psycopg.AsyncConnection[Any]) -> None:
        async with aconn.transaction(force_rollback=True):
            await aconn.execute(INSERT_ORDER, ["o1", 42])
            result = await cw.trigger_async(
                Welcome, PARAMS, tenant_id="t1", idempotency_key="k1", conn=aconn
            )
            assert isinstance(result, Triggered)
            # Inside the transaction, the caller sees Chimeway's rows and the job.
            cur = await aconn.execute("SELECT count(*) FROM procrastinate_jobs")
            assert await cur.fetchone() == (1,)

    run(committed_db, body)
    drain(cw)
    assert_rolled_back(committed_db, adapters["in_app"])


def test_an_error_inside_trigger_async_leaves_the_connection_usable(
    cw: Chimeway, committed_db: str
) -> None:
    async def body(aconn: psycopg.AsyncConnection[Any]) -> int:
        async with aconn.transaction():
            with pytest.raises(InvalidNotifier, match="invalid recipient"):
                await cw.trigger_async(
                    Welcome,
                    {"users": "not a list"},
                    tenant_id="t1",
                    idempotency_key="k",
                    conn=aconn,
                )
            cur = await aconn.execute("SELECT 1")
            row = await cur.fetchone()
        return row[0] if row else 0

    assert run(committed_db, body) == 1


def test_track_signal_async_joins_and_routes_after_commit(cw: Chimeway, committed_db: str) -> None:
    async def body(aconn: psycopg.AsyncConnection[Any]) -> SignalTracked:
        tracked = await cw.track_signal_async(
            "t1", "u1", "clicked", {"x": 1}, idempotency_key="s1", conn=aconn
        )
        assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 0
        await aconn.commit()
        return tracked

    tracked = run(committed_db, body)
    assert isinstance(tracked, SignalTracked)
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 1
    drain(cw)
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:route_signal' "
            "AND status = 'succeeded'",
        )
        == 1
    )


def test_async_calls_without_conn_commit_on_their_own(cw: Chimeway, committed_db: str) -> None:
    async def main() -> Triggered | Any:
        return await cw.trigger_async(Welcome, PARAMS, tenant_id="t1", idempotency_key="k1")

    assert isinstance(asyncio.run(main()), Triggered)
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 1


def test_inbox_reads_and_marks_on_an_async_connection(cw: Chimeway, committed_db: str) -> None:
    cw.trigger(Welcome, {"users": ["u1", "u2"]}, tenant_id="t1", idempotency_key="k1")
    drain(cw)

    async def body(aconn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...]:
        page = await cw.inbox.list_async("t1", "u1", conn=aconn)
        before = await cw.inbox.counts_async("t1", "u1", conn=aconn)
        marked = await cw.inbox.mark_async("t1", "u1", "all", "read", conn=aconn)
        after = await cw.inbox.counts_async("t1", "u1", conn=aconn)
        await aconn.rollback()
        return page, before, marked, after

    page, before, marked, after = run(committed_db, body)
    assert len(page.items) == 1
    assert (before.unread, before.total) == (1, 1)
    assert marked.changed == [page.items[0].id]
    assert after.unread == 0
    # Rolled back: the mark and the signal it emits are gone.
    assert cw.inbox.counts("t1", "u1").unread == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 0


def test_the_callers_connection_keeps_its_prepared_statements_and_settings(
    cw: Chimeway, committed_db: str
) -> None:
    async def body(aconn: psycopg.AsyncConnection[Any]) -> list[Any]:
        await aconn.set_autocommit(True)
        seen = []
        for i in range(8):  # past prepare_threshold: psycopg prepares it on this connection
            cur = await aconn.execute("SELECT %s::int + 1", [i])
            seen.append((await cur.fetchone() or [None])[0])
            await cw.trigger_async(
                Welcome, PARAMS, tenant_id="t1", idempotency_key=f"k{i}", conn=aconn
            )
        return seen

    assert run(committed_db, body) == list(range(1, 9))
    # Autocommit: each trigger was a transaction of its own, committed.
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 8


def test_the_wrong_kind_of_connection_is_refused_naming_the_right_call(
    cw: Chimeway, committed_db: str
) -> None:
    async def body(aconn: psycopg.AsyncConnection[Any]) -> None:
        with pytest.raises(WrongConnection, match="call the \\*_async method"):
            cw.trigger(Welcome, PARAMS, tenant_id="t1", idempotency_key="k1", conn=aconn)  # type: ignore[arg-type]
        with (
            psycopg.connect(committed_db) as sync,
            pytest.raises(WrongConnection, match="without _async"),
        ):
            await cw.trigger_async(
                Welcome,
                PARAMS,
                tenant_id="t1",
                idempotency_key="k1",
                conn=sync,  # type: ignore[arg-type]
            )
        with pytest.raises(WrongConnection, match=r"takes a psycopg Connection; got builtins\.str"):
            cw.track_signal("t1", "u1", "x", conn="postgresql://")  # type: ignore[arg-type]

    run(committed_db, body)
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 0


def test_the_event_loop_runs_while_chimeway_waits(cw: Chimeway, committed_db: str) -> None:
    """A trigger that waits for another transaction (the same idempotency key, not yet
    committed) waits in its thread: the loop goes on, and sees it waiting."""

    async def waiting(other: psycopg.AsyncConnection[Any]) -> bool:
        cur = await other.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        return (await cur.fetchone() or [0])[0] == 1

    async def body(aconn: psycopg.AsyncConnection[Any]) -> Triggered | Duplicate:
        with psycopg.connect(committed_db) as holder:
            cw.trigger(Welcome, PARAMS, tenant_id="t1", idempotency_key="k", conn=holder)
            call = asyncio.create_task(
                cw.trigger_async(Welcome, PARAMS, tenant_id="t1", idempotency_key="k", conn=aconn)
            )
            async with await psycopg.AsyncConnection.connect(committed_db, autocommit=True) as o:
                deadline = asyncio.get_running_loop().time() + 10
                while not await waiting(o):
                    assert asyncio.get_running_loop().time() < deadline, "never waited"
                    await asyncio.sleep(0.01)
            assert not call.done()
            holder.commit()
        result = await call
        await aconn.commit()
        return result

    assert isinstance(run(committed_db, body), Duplicate)
    assert count(committed_db, "SELECT count(*) FROM chimeway_events") == 1


def test_a_borrowed_connection_follows_its_owner_and_leaves_it_its_notifications(
    committed_db: str,
) -> None:
    """db.borrow (what the async seam and Django's connection() use): the owner's
    autocommit is read live, its notifications stay its own, and it stays open."""
    with psycopg.connect(committed_db, autocommit=True) as owner:
        heard: list[str] = []
        owner.add_notify_handler(lambda n: heard.append(n.payload))
        owner.execute("LISTEN chimeway_test")
        borrowed = db.borrow(owner)
        borrowed.execute("SELECT 1")
        assert owner.info.transaction_status == TransactionStatus.IDLE  # autocommit
        owner.autocommit = False  # what Django's atomic() does
        borrowed.execute("SELECT 1")
        assert owner.info.transaction_status == TransactionStatus.INTRANS
        owner.rollback()
        with psycopg.connect(committed_db, autocommit=True) as other:
            other.execute("NOTIFY chimeway_test, 'hello'")
        borrowed.execute("SELECT 1")  # the notification arrives with this result
        assert heard == ["hello"]
        del borrowed
        assert not owner.closed
        assert owner.execute("SELECT 2").fetchone() == (2,)
