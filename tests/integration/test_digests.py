"""Batching (digests, design §15): a workflow that starts with a Batch collects a recipient's
notifications into one run and sends one delivery for all of them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from chimeway import Batch, Chimeway, Daily, Notifier, Recipient, Step, Triggered, Workflow
from chimeway.errors import InvalidNotifier, InvalidTrigger
from chimeway.testing import drain
from tests.integration.conftest import Recorders, concurrently, count

WINDOW = dt.timedelta(minutes=10)


class CommentDigest(Notifier):
    key = "comment_digest"
    version = 1
    category = "comments"
    window: Any = WINDOW
    max_items: int | None = None

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["to"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"author": params["by"], "text": params["text"]}

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow:
        return Workflow(
            key="comment_digest",
            version=1,
            steps=[
                Batch(window=self.window, key="post_id", max_items=self.max_items),
                Step("email", channel="email"),
            ],
        )

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return email("1 new comment", [params["text"]])

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        return email(f"{len(items)} new comments", [i["text"] for i in items])


def email(subject: str, texts: list[str]) -> dict[str, Any]:
    return {
        "subject": subject,
        "text_body": "\n".join(texts),
        "html_body": "".join(f"<p>{t}</p>" for t in texts),
    }


class CappedDigest(CommentDigest):
    max_items = 5


def comment(cw: Chimeway, n: int, *, to: str = "ana", post: str = "p1", tenant: str = "t1",
            notifier: type[Notifier] = CommentDigest, conn: Any = None) -> Triggered:
    result = cw.trigger(
        notifier,
        {"to": to, "by": f"u{n}", "text": f"comment {n}", "post_id": post},
        tenant_id=tenant,
        idempotency_key=f"{tenant}-{post}-{to}-{n}",
        conn=conn,
    )
    assert isinstance(result, Triggered)
    return result


def rows(conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(sql.encode(), params or None).fetchall()


def test_concurrent_triggers_join_one_batch_and_send_one_delivery(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    numbers = iter(range(50))
    take = __import__("threading").Lock()

    def one() -> Triggered:
        with take:
            n = next(numbers)
        return comment(cw, n)

    results = concurrently(50, one)
    assert len({r.run_ids[0] for r in results}) == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_workflow_runs") == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_digests") == 1
    assert count(committed_db, "SELECT member_count FROM chimeway_digests") == 50
    assert count(committed_db, "SELECT count(*) FROM chimeway_digest_members") == 50
    with psycopg.connect(committed_db) as conn:
        positions = [r[0] for r in rows(conn, "SELECT position FROM chimeway_digest_members ORDER BY 1")]
    assert positions == list(range(1, 51))
    drain(cw)  # nothing is due before the window ends
    assert adapters["email"].sent == []
    run_id = results[0].run_ids[0]
    result = cw.progression.progress_run(run_id, now=dt.datetime.now(dt.UTC) + WINDOW)
    assert type(result).__name__ == "Advanced"
    drain(cw)
    [sent] = adapters["email"].sent
    assert sent.content["subject"] == "50 new comments"
    assert sorted(sent.content["text_body"].split("\n")) == sorted(f"comment {n}" for n in range(50))
    with psycopg.connect(committed_db) as conn:
        statuses = dict(rows(conn, "SELECT status::text, count(*) FROM chimeway_deliveries GROUP BY 1"))
    assert statuses == {"succeeded": 1, "digested": 49}
