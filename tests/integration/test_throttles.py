"""Throttles at the claim (design §13), on committed rows (grants use the claim's instant,
which a rolled-back test transaction would freeze): what is granted is sent, the rest is
held until the next free instant with a job then, and channels naming one key share it.
Eight worker processes against one throttle: tests/acceptance/test_policy_workers.py."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from chimeway import (
    Chimeway,
    DeliveryStatus,
    InvalidArgument,
    OrchestrationState,
    Temporary,
    Throttle,
    Triggered,
)
from tests.integration.conftest import Recorders
from tests.integration.notifiers import Welcome


class Texts(Welcome):
    def render(self, params: dict[str, Any], recipient: Any, channel: str) -> dict[str, Any]:
        return (
            {"text_body": "Hi"} if channel == "sms" else super().render(params, recipient, channel)
        )


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params or None).fetchall()


def fan_out(cw: Chimeway, n: int, channel: str = "email", key: str = "k") -> list[Any]:
    users = [f"u{i:02}" for i in range(n)]
    result = cw.trigger(
        Texts, {"users": users, "channels": [channel]}, tenant_id="t", idempotency_key=key
    )
    assert isinstance(result, Triggered)
    return result.delivery_ids


def test_what_is_not_granted_waits_for_the_next_free_instants(
    make_cw: Callable[..., Chimeway], adapters: Recorders, committed_db: str
) -> None:
    window = dt.timedelta(minutes=1)  # far longer than the test: no slot frees meanwhile
    cw = make_cw(throttles={"email": Throttle(3, per=window)})
    ids = fan_out(cw, 8)
    results = cw.deliver_many(ids)
    assert [r.action for r in results].count("succeeded") == 3
    held = [cw.delivery("t", r.delivery_id) for r in results if r.action == "skipped"]
    assert len(held) == 5
    assert all(h.status == DeliveryStatus.PENDING for h in held)
    assert all(h.orchestration_state == OrchestrationState.DEFERRED for h in held)
    [(granted_at,)] = rows(
        committed_db, "SELECT DISTINCT started_at FROM chimeway_delivery_attempts"
    )
    assert sorted(h.next_eligible_at for h in held) == (
        [granted_at + window] * 3 + [granted_at + 2 * window] * 2
    )
    jobs = rows(
        committed_db,
        "SELECT scheduled_at, jsonb_array_length(args->'delivery_ids') FROM procrastinate_jobs"
        " WHERE scheduled_at > now() ORDER BY 1",
    )
    assert jobs == [(granted_at + window, 3), (granted_at + 2 * window, 2)]
    explained = cw.explain_delivery("t", held[0].id)
    assert explained.why.startswith(
        "Not sent yet: Held by the email throttle (3 per 1 minute, key 'email'): the next free "
        "slot is at "
    )
    # Sent early by hand, a held delivery stays held: its time has not come.
    assert cw.deliver(held[0].id).action == "skipped"
    assert rows(committed_db, "SELECT sum(sends) FROM chimeway_throttle_sends") == [(3,)]


def test_channels_naming_one_key_share_its_budget_and_retries_wait_too(
    make_cw: Callable[..., Chimeway], adapters: Recorders, committed_db: str
) -> None:
    account = Throttle(2, per=dt.timedelta(minutes=1), key="provider-account")
    cw = make_cw(throttles={"email": account, "sms": account})
    adapters["email"].then(Temporary("busy"))
    [first] = fan_out(cw, 1, "email", "k1")
    assert cw.deliver(first).action == "retry_scheduled"  # one grant used
    sms = fan_out(cw, 2, "sms", "k2")
    assert [r.action for r in cw.deliver_many(sms)].count("succeeded") == 1
    # The retry is due at once (no backoff here), but the shared budget is spent.
    assert cw.deliver(first).action == "skipped"
    retry = cw.delivery("t", first)
    assert retry.status == DeliveryStatus.FAILED
    assert retry.retry_at is not None and retry.planning_reason == "throttled"
    assert len(adapters["email"].requests) == 1


def test_a_throttle_is_checked_when_built() -> None:
    with pytest.raises(InvalidArgument, match=r"Throttle\.limit must be a whole number"):
        Throttle(0)
    with pytest.raises(InvalidArgument, match="must have the same limit and per"):
        Chimeway(
            "postgresql://unused@127.0.0.1:1/x",
            throttles={"email": Throttle(2, key="a"), "sms": Throttle(3, key="a")},
        )


def test_a_held_delivery_goes_once_its_time_has_come(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    """Its job at the hold's end claims it: decided again (nothing stops it) and sent."""
    cw = make_cw()
    [delivery_id] = fan_out(cw, 1)
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "UPDATE chimeway_deliveries SET orchestration_state = 'deferred',"
            " planning_reason = 'quiet_hours', next_eligible_at = now() + interval '1 hour'"
        )
    assert cw.deliver(delivery_id).action == "skipped"  # early: not its time
    with psycopg.connect(committed_db) as conn:
        conn.execute("UPDATE chimeway_deliveries SET next_eligible_at = now()")
    assert cw.deliver(delivery_id).action == "succeeded"
    moves = [
        m.detail["reason"]
        for m in cw.explain_delivery("t", delivery_id).timeline
        if m.event.startswith("delivery_")
    ]
    assert moves == ["planned", "resumed_from_deferral", "dispatched", "sent"]


def test_each_delivery_kept_from_the_claim_says_why(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    cw = make_cw(throttles={"email": Throttle(1, per=dt.timedelta(minutes=1))})
    first, second = fan_out(cw, 2)
    cw.preferences.set("t", "u01", enabled=False, channel="email")
    results = {r.delivery_id: r for r in cw.deliver_many([first, second, first])}
    assert results[first].action == "succeeded"
    assert (results[second].action, results[second].detail) == (
        "skipped",
        "suppressed (channel_disabled)",
    )
    missing = uuid.uuid4()
    assert cw.deliver(missing).detail == "missing"
    [third] = fan_out(cw, 1, key="k2")
    held = cw.deliver(third)
    assert held.action == "skipped" and held.detail.startswith("throttled until ")
