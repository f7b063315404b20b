"""Group commit of webhooks posted over HTTP (chimeway.engine.webhooks.WebhookWriter): the
requests arriving at once share one statement and its commit, each is answered only after
that commit, and a statement that fails fails every request of its batch, writing nothing.

The writers here wait (``linger``) until their batch is full, so which requests share a
batch is decided by the test, not by timing; a batch that never filled would leave its
requests unanswered past the client's timeout. The rows of one statement share one
transaction id (``xmin``): that is what shows they were committed together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from chimeway import Chimeway
from chimeway.engine.webhooks import INLINE_BODY_BYTES, WebhookWriter, verified
from chimeway.errors import InvalidArgument
from chimeway.feedback import FeedbackEvent
from chimeway.http.app import build
from tests.integration.conftest import Uvicorns, count
from tests.integration.webhook_support import PROVIDER, receipt

#: How long a writer waits for its batch to fill: far longer than the client waits.
LINGER = 60.0
CLIENT_TIMEOUT = 15.0

Serve = Callable[[WebhookWriter], str]


@pytest.fixture
def cw(make_cw: Callable[..., Chimeway]) -> Chimeway:
    return make_cw(webhook_providers=[PROVIDER])


@pytest.fixture
def serve(cw: Chimeway, uvicorns: Uvicorns) -> Serve:
    """``serve(writer)`` runs uvicorn with the app storing webhooks through ``writer``."""
    return lambda writer: uvicorns.start(build(cw.engine, webhook_writer=writer))


def post_all(base: str, requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    """Post every request at once, each from its own thread; the answers in order."""

    def post(request: tuple[bytes, dict[str, str]]) -> httpx.Response:
        body, headers = request
        return httpx.post(
            f"{base}/v1/webhooks/receipts",
            content=body,
            headers=headers,
            timeout=CLIENT_TIMEOUT,
        )

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


def transactions(url: str) -> int:
    """How many transactions wrote the ingress rows and their jobs."""
    return count(
        url,
        "SELECT count(DISTINCT x) FROM ("
        " SELECT xmin::text AS x FROM chimeway_webhook_ingress"
        " UNION ALL SELECT xmin::text FROM procrastinate_jobs"
        " WHERE task_name = 'chimeway:process_webhook') AS t",
    )


def stored(url: str) -> tuple[int, int]:
    rows = count(url, "SELECT count(*) FROM chimeway_webhook_ingress")
    jobs = count(
        url,
        "SELECT count(*) FROM procrastinate_jobs j JOIN chimeway_webhook_ingress i"
        " ON j.args->>'ingress_id' = i.id::text WHERE j.task_name = 'chimeway:process_webhook'",
    )
    return rows, jobs


def test_concurrent_requests_are_all_committed_by_one_statement(
    cw: Chimeway, serve: Serve, committed_db: str
) -> None:
    base = serve(WebhookWriter(cw.engine, max_batch=6, linger=LINGER))
    answers = post_all(base, [receipt("delivered", uuid.uuid4()) for _ in range(6)])
    assert [a.status_code for a in answers] == [200] * 6
    assert [a.json() for a in answers] == [{"events": 1, "stored": 1, "duplicates": 0}] * 6
    assert stored(committed_db) == (6, 6)  # committed before the answers: visible here
    assert transactions(committed_db) == 1


def test_the_same_event_twice_in_one_batch_is_stored_once(
    cw: Chimeway, serve: Serve, committed_db: str
) -> None:
    base = serve(WebhookWriter(cw.engine, max_batch=3, linger=LINGER))
    twice = receipt("delivered", uuid.uuid4(), event_id="msg_twice")
    answers = post_all(base, [twice, twice, receipt("opened", uuid.uuid4())])
    assert [a.status_code for a in answers] == [200] * 3
    assert sorted(a.json()["stored"] for a in answers[:2]) == [0, 1]
    assert answers[2].json()["stored"] == 1
    assert stored(committed_db) == (2, 2)
    assert transactions(committed_db) == 1


def test_a_webhook_the_database_refuses_fails_alone(
    cw: Chimeway, serve: Serve, committed_db: str
) -> None:
    poison = uuid.uuid4()
    with psycopg.connect(committed_db, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF NEW.delivery_ref = '{poison}' THEN RAISE EXCEPTION 'poison'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON chimeway_webhook_ingress"
            " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
    base = serve(WebhookWriter(cw.engine, max_batch=4, linger=LINGER))
    requests = [receipt("delivered", uuid.uuid4()) for _ in range(3)]
    requests.append(receipt("delivered", poison))
    answers = post_all(base, requests)
    # Their shared statement failed; each was then written alone, and only the poisoned
    # one failed (the provider retries it), with nothing of it written.
    assert [a.status_code for a in answers] == [200, 200, 200, 500]
    assert stored(committed_db) == (3, 3)
    with psycopg.connect(committed_db, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_poison ON chimeway_webhook_ingress")
    answers = post_all(base, requests)  # the provider's retries: the three are duplicates
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.json()["stored"] for a in answers] == [0, 0, 0, 1]
    assert stored(committed_db) == (4, 4)


def test_a_database_that_is_down_fails_the_whole_batch_with_503(serve: Serve) -> None:
    with Chimeway(
        "postgresql://nobody@127.0.0.1:1/none",
        webhook_providers=[PROVIDER],
        pool_min_size=0,
        pool_timeout=0.5,
    ) as down:
        base = serve(WebhookWriter(down.engine, max_batch=3, linger=LINGER))
        answers = post_all(base, [receipt("delivered", uuid.uuid4()) for _ in range(3)])
        assert [a.status_code for a in answers] == [503] * 3
        assert all(a.headers["retry-after"] == "30" for a in answers)
        assert all(
            a.json() == {"error": "the database is unavailable; try again later"} for a in answers
        )


def test_a_lone_request_is_written_at_once_without_linger(
    cw: Chimeway, serve: Serve, committed_db: str
) -> None:
    base = serve(WebhookWriter(cw.engine))
    [answer] = post_all(base, [receipt("delivered", uuid.uuid4())])
    assert answer.status_code == 200
    assert stored(committed_db) == (1, 1)


@pytest.mark.parametrize("options", [{"max_batch": 0}, {"flushers": 0}, {"linger": -1.0}], ids=str)
def test_writer_options_are_checked(tx_cw: Chimeway, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        WebhookWriter(tx_cw.engine, **options)


def test_a_webhook_stored_right_after_the_last_write_ends_is_written(
    cw: Chimeway, committed_db: str
) -> None:
    """The caller of a write resumes before the write's task has ended: a webhook it
    stores at once must still find a flusher (with one flusher: none other is running)."""

    def events() -> list[FeedbackEvent]:
        body, headers = receipt("delivered", uuid.uuid4())
        return verified(cw.engine, "receipts", body, headers, None)

    async def one_after_the_other() -> list[list[uuid.UUID]]:
        writer = WebhookWriter(cw.engine, flushers=1)
        try:
            first = await writer.store(events())
            # In this task (asyncio.timeout, not wait_for's new task), so the second store
            # runs before the first write's task has ended.
            async with asyncio.timeout(CLIENT_TIMEOUT):
                second = await writer.store(events())
            return [first, second]
        finally:
            await writer.close()

    first, second = asyncio.run(one_after_the_other())
    assert len(first) == len(second) == 1
    assert stored(committed_db) == (2, 2)


def test_a_large_body_is_verified_off_the_event_loop_and_stored(
    cw: Chimeway, serve: Serve, committed_db: str
) -> None:
    body, headers = receipt("delivered", uuid.uuid4(), note="x" * (2 * INLINE_BODY_BYTES))
    assert len(body) > INLINE_BODY_BYTES
    base = serve(WebhookWriter(cw.engine))
    [answer] = post_all(base, [(body, headers)])
    assert answer.status_code == 200
    assert answer.json() == {"events": 1, "stored": 1, "duplicates": 0}
    forged = {**headers, "webhook-signature": "v1,AAAA"}
    [refused] = post_all(base, [(body, forged)])
    assert refused.status_code == 401
    assert stored(committed_db) == (1, 1)


def test_process_stores_in_one_autocommit_statement_and_returns_the_connection_as_it_was(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    """``cw.webhooks.process`` without ``conn=``: the same one statement, in autocommit
    mode on a pool connection that goes back to the pool in transaction mode, also when
    the statement fails."""
    one = make_cw(webhook_providers=[PROVIDER], pool_min_size=1, pool_max_size=1)
    result = one.webhooks.process("receipts", *receipt("delivered", uuid.uuid4()))
    assert len(result.ingress_ids) == 1
    with one.engine.pool.connection() as conn:
        assert conn.autocommit is False
    assert stored(committed_db) == (1, 1)
    with psycopg.connect(committed_db, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_all() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'refused'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_all BEFORE INSERT ON chimeway_webhook_ingress"
            " FOR EACH ROW EXECUTE FUNCTION refuse_all()"
        )
    with pytest.raises(psycopg.errors.RaiseException):
        one.webhooks.process("receipts", *receipt("delivered", uuid.uuid4()))
    with one.engine.pool.connection() as conn:
        assert conn.autocommit is False
    assert stored(committed_db) == (1, 1)
