"""The application the benchmark workers run: ``chimeway worker --app bench.bench_app:build``.

Configured from the environment: ``CHIMEWAY_DATABASE_URL``, ``BENCH_LATENCY_MS`` (how long
the adapter sleeps per send, simulating a provider; 0 returns at once) and
``BENCH_DELIVERY_BATCH_SIZE`` (Chimeway's ``delivery_batch_size``; unset: its default).
Besides Chimeway's tasks it registers the raw Procrastinate tasks the baselines use, on the
same App, so the baseline runs under exactly the same worker settings:

* ``bench.noop`` (sync, like Chimeway's tasks) and ``bench.noop_async``: do nothing;
* ``bench.stamp(seq)``: records ``time.time()`` at task start into ``bench_stamps``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import time
from typing import Any

from chimeway import (
    Chimeway,
    DeliveryRequest,
    Notifier,
    OnOutcome,
    OnSignal,
    Recipient,
    Sent,
    Step,
    WaitUntil,
    Workflow,
)

RAW_QUEUE = "bench_raw"
SIGNAL = "bench.go"
STAMPS_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_stamps "
    "(kind text NOT NULL, seq int NOT NULL, started double precision NOT NULL)"
)

CONTENT = {
    "in_app": {
        "headline": "Mentioned",
        "body": "You were mentioned",
        "primary_action": {"label": "Open", "url": "/m"},
    },
    "email": {"subject": "Mentioned", "html_body": "<p>Hi</p>", "text_body": "Hi"},
}

TWO_STEP = Workflow(
    "bench_two_step",
    1,
    [
        Step("notice", "in_app", [OnOutcome(outcome="delivered", to_step="email")]),
        Step("email", "email"),
    ],
)
SIGNAL_WAIT = Workflow(
    "bench_signal",
    1,
    [
        Step(
            "notice",
            "in_app",
            [
                WaitUntil(delay=dt.timedelta(days=1), to_step="email"),
                OnSignal(event=SIGNAL, to_step="email"),
            ],
        ),
        Step("email", "email"),
    ],
)
TIMERS = {
    seconds: Workflow(
        f"bench_timer_{seconds}s",
        1,
        [
            Step("notice", "in_app", [WaitUntil(delay=seconds, to_step="email")]),
            Step("email", "email"),
        ],
    )
    for seconds in (1, 2, 3)
}


class _Bench(Notifier):
    """Recipients ``{prefix}-0 .. {prefix}-{n-1}`` from params ``{"n": .., "prefix": ..}``."""

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        prefix = params.get("prefix", "u")
        return [{"id": f"{prefix}-{i}"} for i in range(int(params["n"]))]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"user": recipient.id}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return CONTENT[channel]


class TwoStep(_Bench):
    key = "bench_two_step"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return TWO_STEP


class Plain(_Bench):
    """No workflow: one in-app delivery per recipient."""

    key = "bench_plain"
    version = 1


class SignalWait(_Bench):
    key = "bench_signal"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return SIGNAL_WAIT


class Timers(_Bench):
    """Waits of 1, 2 or 3 s (by recipient number, or all ``params["wait"]`` s) between the
    two steps."""

    key = "bench_timer"
    version = 1

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        if "wait" in params:
            return TIMERS[int(params["wait"])]
        return TIMERS[int(recipient.id.rsplit("-", 1)[1]) % 3 + 1]


class SleepAdapter:
    """Returns ``Sent`` after ``latency`` seconds (0: at once)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def deliver(self, request: DeliveryRequest) -> Sent:
        if self.latency:
            time.sleep(self.latency)
        return Sent(provider_message_id=f"bench-{request.delivery_id}")


def build_defaults() -> dict[str, Any]:
    """The Chimeway settings the benchmarks do not set themselves, as the library has them."""
    params = inspect.signature(Chimeway).parameters
    return {name: params[name].default for name in ("delivery_batch_size", "send_concurrency")}


def build(url: str | None = None) -> Chimeway:
    latency = float(os.environ.get("BENCH_LATENCY_MS", "0")) / 1000
    batch = os.environ.get("BENCH_DELIVERY_BATCH_SIZE")
    cw = Chimeway(
        url or os.environ["CHIMEWAY_DATABASE_URL"],
        notifiers=[TwoStep, Plain, SignalWait, Timers],
        default_adapter=SleepAdapter(latency),
        **({"delivery_batch_size": int(batch)} if batch else {}),
    )
    app = cw.procrastinate

    @app.task(name="bench.noop", queue=RAW_QUEUE)
    def noop(i: int) -> None:
        return None

    @app.task(name="bench.noop_async", queue=RAW_QUEUE)
    async def noop_async(i: int) -> None:
        return None

    @app.task(name="bench.stamp", queue=RAW_QUEUE)
    def stamp(kind: str, seq: int) -> None:
        started = time.time()
        with cw.pool.connection() as conn:
            conn.execute(
                "INSERT INTO bench_stamps (kind, seq, started) VALUES (%s, %s, %s)",
                [kind, seq, started],
            )

    return cw
