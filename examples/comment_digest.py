"""A comment digest: one email for "7 new comments" instead of seven.

The workflow starts with a ``Batch``: the first comment on a post opens a batch for the
post's author (one per post, ``key="post_id"``), the next ones join it, and when its window
ends the run goes on to its email step, which sends one digest rendered by
``render_batch`` from every comment. The window here is 2 seconds so the example runs
quickly; a real one would be minutes, or ``Daily(9)`` for a morning summary in the
recipient's time zone.

    CHIMEWAY_DATABASE_URL=postgresql://... python examples/comment_digest.py

The database must be migrated (``chimeway migrate``). Jobs are run with
``chimeway.testing.drain`` so that the example needs no worker; in production a
``chimeway worker`` (given the same ``notifiers=``) runs them.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from chimeway import Batch, Chimeway, Notifier, Recipient, Step, Triggered, Workflow
from chimeway.testing import RecordingAdapter, drain, due_jobs

DIGEST = Workflow(
    key="comment_digest",
    version=1,
    steps=[
        Batch(window=timedelta(seconds=2), key="post_id", max_items=50),
        Step("email", channel="email"),
    ],
)


class NewComment(Notifier):
    key = "new_comment"
    version = 1
    category = "comments"

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["author_id"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"by": params["by"], "excerpt": params["text"][:80], "post_id": params["post_id"]}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        # One comment on its own (what the batch's first item would say alone).
        return email(f"{params['by']} commented on your post", [self.build(params, recipient)])

    def render_batch(
        self, items: list[dict[str, Any]], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        # Every comment the batch collected, oldest first.
        return email(f"{len(items)} new comments on your post", items)

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return DIGEST


def email(subject: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    lines = [f"{item['by']}: {item['excerpt']}" for item in items]
    return {
        "subject": subject,
        "text_body": "\n".join(lines),
        "html_body": "".join(f"<p>{line}</p>" for line in lines),
    }


def main() -> int:
    url = os.environ.get("CHIMEWAY_DATABASE_URL")
    if not url:
        print("set CHIMEWAY_DATABASE_URL to a migrated database", file=sys.stderr)
        return 2
    outbox = RecordingAdapter()  # a real app passes SmtpAdapter(...) for "email"
    with Chimeway(url, notifiers=[NewComment], adapters={"email": outbox}) as cw:
        post = f"post-{uuid.uuid4().hex[:6]}"
        results = []
        for n, (by, text) in enumerate(
            [("grace", "Great point"), ("alan", "I disagree"), ("grace", "Why?")]
            + [("linus", f"+{i}") for i in range(1, 5)]
        ):
            result = cw.trigger(
                NewComment,
                {"author_id": "ada", "post_id": post, "by": by, "text": text},
                tenant_id="acme",
                idempotency_key=f"comment-{post}-{n}",  # e.g. the comment's id
            )
            assert isinstance(result, Triggered)
            results.append(result)
        runs = {r.run_ids[0] for r in results}
        print(f"triggered 7 comments: {len(runs)} run")

        held = cw.explain_delivery("acme", results[2].delivery_ids[0])
        print(f"third comment: {held.status}: {held.why.split(' closes at')[0]}")

        deadline = time.monotonic() + 30
        while due_jobs(cw) == 0:  # the batch's timer falls due at the window's end
            if time.monotonic() > deadline:
                print("the batch's timer never fell due", file=sys.stderr)
                return 1
            time.sleep(0.1)
        drain(cw)  # closes the batch and sends the digest
        [sent] = outbox.sent
        print(f"sent 1 email: {sent.content['subject']!r}")
        print("  " + sent.content["text_body"].replace("\n", "\n  "))

        member = cw.explain_delivery("acme", results[2].delivery_ids[0])
        print(f"third comment: {member.status}: {member.why.split(' (sent)')[0]}")
        assert member.digest is not None and member.digest.delivery_id is not None
        digest = cw.explain_delivery("acme", member.digest.delivery_id)
        print(f"digest: {digest.status}: {digest.why.split(', closed at')[0]}")
        print(f"  closed because: {digest.digest and digest.digest.close_reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
