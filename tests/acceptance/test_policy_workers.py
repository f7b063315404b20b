"""Acceptance: policy under real ``chimeway worker`` processes (design §13). A delivery held
by quiet hours is decided again and sent when the window ends; eight workers share a
throttle of 20 sends a second and never exceed it, and every delivery is sent."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from chimeway import Chimeway, DeliveryReason, DeliveryStatus, Triggered
from tests.acceptance.conftest import Workers, wait_until

pytestmark = pytest.mark.slow

APP = ("--app", "tests.acceptance.policy_app:build")


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params or None).fetchall()


def test_a_held_delivery_is_decided_again_and_sent_when_the_window_ends(
    workers: Workers, committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
    from tests.acceptance.policy_app import build

    with build() as cw:
        now = rows(committed_db, "SELECT now()")[0][0].astimezone(dt.UTC)
        start, end = now - dt.timedelta(minutes=1), now + dt.timedelta(seconds=3)
        for user in ("ana", "bob"):
            cw.preferences.set_quiet_hours("t", user, start.time(), end.time(), timezone="UTC")
        result = cw.trigger("news", {"users": ["ana", "bob"]}, tenant_id="t", idempotency_key="k")
        assert isinstance(result, Triggered)
        ana, bob = result.delivery_ids
        held = cw.delivery("t", ana)
        assert (held.orchestration_state, held.next_eligible_at) == ("deferred", end)
        cw.preferences.set("t", "bob", enabled=False, category="news")  # during the hold

        workers.start(*APP, "--poll-interval", "0.1")
        wait_until(lambda: cw.delivery("t", ana).status == DeliveryStatus.SUCCEEDED, timeout=30)
        [(started,)] = rows(
            committed_db,
            "SELECT started_at FROM chimeway_delivery_attempts WHERE delivery_id = %s",
            ana,
        )
        # Sent at the window's end, within the job timer's precision (a poll of 0.1 s here).
        assert end <= started < end + dt.timedelta(seconds=1.5)
        wait_until(lambda: cw.delivery("t", bob).status == DeliveryStatus.SUPPRESSED, timeout=10)
        assert cw.delivery("t", bob).suppression_reason == DeliveryReason.CATEGORY_DISABLED
        assert rows(
            committed_db,
            "SELECT count(*) FROM chimeway_delivery_attempts WHERE delivery_id = %s",
            bob,
        ) == [(0,)]
        explained = cw.explain_delivery("t", ana)
        assert explained.decisions[0].startswith("Held by quiet hours ")
        assert explained.why.startswith("Sent: the email adapter accepted it on attempt 1")


def max_in_any_window(instants: list[dt.datetime], width: dt.timedelta) -> int:
    """The most instants in any half-open window [t, t + width)."""
    ordered = sorted(instants)
    most, low = 0, 0
    for high, at in enumerate(ordered):
        while ordered[low] <= at - width:
            low += 1
        most = max(most, high - low + 1)
    return most


def test_eight_workers_share_a_throttle_of_20_per_second(
    workers: Workers,
    committed_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 160
    env = {"THROTTLE": "20", "BATCH_SIZE": "5"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
    from tests.acceptance.policy_app import build

    cw: Chimeway
    with build() as cw:
        for _ in range(8):
            workers.start(*APP, "--poll-interval", "0.1", "--concurrency", "4", **env)
        # All eight are up before the burst (a loaded machine starts them slowly).
        wait_until(lambda: workers.registered() >= 8, timeout=60)
        users = [f"user-{i:03}" for i in range(total)]
        result = cw.trigger("news", {"users": users}, tenant_id="t", idempotency_key="burst")
        assert isinstance(result, Triggered)

        def all_sent() -> bool:
            """every delivery succeeded"""
            [(done,)] = rows(
                committed_db,
                "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'",
            )
            return bool(done == total)

        wait_until(all_sent, timeout=120, every=0.25)
        # Every process that claims registers in the claimants' registry (and leaves it when
        # it stops; a record clears the delivery's own claimant).
        [(claimants,)] = rows(committed_db, "SELECT count(*) FROM chimeway_processes")

    attempts = rows(committed_db, "SELECT delivery_id, started_at FROM chimeway_delivery_attempts")
    assert len(attempts) == total  # each sent once: none dropped, none twice
    assert len({delivery_id for delivery_id, _ in attempts}) == total
    starts = [started for _, started in attempts]
    assert max_in_any_window(starts, dt.timedelta(seconds=1)) <= 20
    # The throttle was the limit, not the workers: the burst took about total / 20 seconds.
    assert max(starts) - min(starts) >= dt.timedelta(seconds=total / 20 - 1.5)
    held = rows(
        committed_db,
        "SELECT count(DISTINCT delivery_id) FROM chimeway_delivery_transitions"
        " WHERE reason = 'deferred' AND context->>'rule' = 'throttled'",
    )[0][0]
    assert held > 0  # deliveries waited for free slots rather than being dropped
    assert claimants >= 3, "the sends were shared by several worker processes"


def test_max_in_any_window_counts_half_open_windows() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def seconds(s: float) -> dt.datetime:
        return t0 + dt.timedelta(seconds=s)

    assert max_in_any_window([seconds(0), seconds(0.5), seconds(1)], dt.timedelta(seconds=1)) == 2
    assert max_in_any_window([seconds(0), seconds(0.999)], dt.timedelta(seconds=1)) == 2
    assert max_in_any_window([], dt.timedelta(seconds=1)) == 0
