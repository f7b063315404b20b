"""What every framework path must show (issue #19): the app's row, Chimeway's rows and the
job commit together, a rollback leaves none of them, and the committed job runs."""

from __future__ import annotations

from typing import Any

import psycopg

from chimeway import Chimeway, Triggered
from chimeway.testing import RecordingAdapter, drain
from tests.integration.conftest import count

#: The app's own table, written in the same transaction as the trigger.
APP_TABLE = "CREATE TABLE app_orders (id text PRIMARY KEY, total int NOT NULL)"
INSERT_ORDER = "INSERT INTO app_orders (id, total) VALUES (%s, %s)"
PARAMS: dict[str, Any] = {"users": ["u1"], "channels": ["in_app"]}


def create_app_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(APP_TABLE)


def rows(url: str) -> dict[str, int]:
    """The rows one trigger of ``PARAMS`` writes, by table, with the app's."""
    return {
        table: count(url, f"SELECT count(*) FROM {table}")
        for table in (
            "app_orders",
            "chimeway_events",
            "chimeway_notifications",
            "chimeway_deliveries",
            "procrastinate_jobs",
        )
    }


COMMITTED = {
    "app_orders": 1,
    "chimeway_events": 1,
    "chimeway_notifications": 1,
    "chimeway_deliveries": 1,
    "procrastinate_jobs": 1,
}
NOTHING = dict.fromkeys(COMMITTED, 0)


def assert_committed_and_delivered(
    cw: Chimeway, url: str, result: object, recorder: RecordingAdapter
) -> None:
    """After a commit: every row is there, and the job sends the delivery."""
    assert isinstance(result, Triggered)
    assert rows(url) == COMMITTED
    drain(cw)
    assert [r.delivery_id for r in recorder.sent] == result.delivery_ids
    assert count(url, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'") == 1
    assert (
        count(url, "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')") == 0
    )


def assert_rolled_back(url: str, recorder: RecordingAdapter) -> None:
    assert rows(url) == NOTHING
    assert recorder.sent == []
