"""The application the chaos tests (and ``bench/chaos.py``) run under real worker processes.

Its adapters keep the ground truth of sends across processes: every call that reaches the
"provider" appends one line to ``$SENDS_FILE`` (``O_APPEND`` and ``fsync``, so a line written
before a ``kill -9`` is there, and lines of concurrent processes never interleave):
``<delivery id> <attempt number> <idempotency key> <pid>``. The recipient id's prefix (up to
the first ``-``) picks how the call behaves, so one fan-out can mix healthy, exploding and
hanging sends. Configured from the environment, like ``tests/acceptance/app.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from chimeway import (
    Chimeway,
    DeliveryRequest,
    Maintenance,
    Notifier,
    OnOutcome,
    Recipient,
    RetryPolicy,
    Sent,
    Step,
    Temporary,
    Workflow,
)

CONTENT = {
    "in_app": {"headline": "Hi", "body": "Hi", "primary_action": {"label": "Open", "url": "/x"}},
    "email": {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"},
    "sms": {"text_body": "Hi"},
}
#: How deep the ``deep`` behaviour nests its answer (PostgreSQL refuses jsonb this deep).
DEEP = 10_000


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"k": value}
    return value


def write_send(path: str, request: DeliveryRequest) -> None:
    """One line per call, durable before the call returns (append + fsync)."""
    line = (
        f"{request.delivery_id} {request.attempt_number} {request.idempotency_key} {os.getpid()}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class GroundTruthAdapter:
    """Writes each send it really makes to ``$SENDS_FILE``, then answers as the recipient's
    prefix says: ``ok`` (after ``$SEND_DELAY`` seconds), ``raise`` (a bug), ``garbage`` (not
    a ``Sent``), ``nul`` and ``deep`` and ``huge`` (answers PostgreSQL cannot store as they
    are), ``tempnul`` (a temporary failure with unstorable text); ``hang`` sleeps
    ``$HANG_SECONDS`` then gives up with a temporary failure, and writes nothing (no send
    reached the provider)."""

    def __init__(self, name: str, *, timeout: float | None = None, capacity: int | None = None):
        self.name = name
        if timeout is not None:
            self.timeout = timeout
        if capacity is not None:
            self.capacity = capacity

    def deliver(self, request: DeliveryRequest) -> Sent:
        behaviour = request.recipient_id.split("-")[0]
        if behaviour == "hang":
            time.sleep(float(os.environ.get("HANG_SECONDS", "5")))
            raise Temporary("the provider did not answer")
        write_send(os.environ["SENDS_FILE"], request)
        if behaviour == "raise":
            raise RuntimeError("the adapter has a bug")
        if behaviour == "garbage":
            garbage: Any = [42, None, "sent", object()][request.attempt_number % 4]
            return garbage  # type: ignore[no-any-return]
        if behaviour == "nul":
            return Sent("id\x00\ud800", meta={"k\x00": "\ud800", "s": "a\x00b", "n": float("nan")})
        if behaviour == "deep":
            return Sent("deep", meta=_deep(DEEP))
        if behaviour == "huge":
            return Sent("huge", meta={"blob": "x" * 3_000_000, "many": list(range(100_000))})
        if behaviour == "tempnul":
            raise Temporary("bad\x00\ud800", meta={"x\x00": float("inf")})
        time.sleep(float(os.environ.get("SEND_DELAY", "0")))
        return Sent(provider_message_id=f"m-{request.delivery_id}")


class Burst(Notifier):
    """One delivery per user and channel (``params["channels"]``, default in_app)."""

    key = "burst"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": user} for user in params["users"]]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return list(params.get("channels", ["in_app"]))

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return CONTENT[channel]


TWO_STEPS = Workflow(
    key="two_steps",
    version=1,
    steps=[
        Step("notice", channel="in_app", progress=[OnOutcome(outcome="delivered", to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


class Steps(Burst):
    """A two-step run per user: in_app, then sms once it is delivered."""

    key = "steps"

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return TWO_STEPS


def build() -> Chimeway:
    env = os.environ
    tick = "* * * * * *"  # every second: tests don't wait a minute for maintenance
    email_timeout = env.get("EMAIL_TIMEOUT")
    send_timeout = env.get("SEND_TIMEOUT")
    return Chimeway(
        env["CHIMEWAY_DATABASE_URL"],
        notifiers=[Burst, Steps],
        adapters={
            "in_app": GroundTruthAdapter("in_app"),
            "sms": GroundTruthAdapter("sms"),
            "email": GroundTruthAdapter(
                "email",
                timeout=float(email_timeout) if email_timeout else None,
                capacity=int(env.get("EMAIL_CAPACITY", "4")),
            ),
        },
        default_retry=RetryPolicy(
            max_attempts=int(env.get("MAX_ATTEMPTS", "3")),
            base_delay=dt.timedelta(0),
            jitter=0,
        ),
        stuck_after=dt.timedelta(seconds=float(env.get("STUCK_AFTER", "5"))),
        delivery_batch_size=int(env.get("DELIVERY_BATCH", "50")),
        send_concurrency=int(env.get("SEND_CONCURRENCY", "8")),
        send_timeout=dt.timedelta(seconds=float(send_timeout)) if send_timeout else None,
        maintenance=Maintenance(
            sweep_cron=tick,
            stalled_cron=tick,
            stalled_after=dt.timedelta(seconds=3),
            redrive_after=dt.timedelta(seconds=5),
        ),
    )


def sends(path: Path) -> list[tuple[str, int]]:
    """The ground truth: (delivery id, attempt number) of every send, in the order made."""
    if not path.exists():
        return []
    return [
        (parts[0], int(parts[1]))
        for parts in (line.split() for line in path.read_text().splitlines())
        if len(parts) == 4
    ]
