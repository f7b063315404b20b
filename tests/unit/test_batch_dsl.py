"""``Batch`` and ``Daily`` (design §15): validation, storage in the first step's config, batch
keys, and when a batch closes, daily windows across DST changes included. Pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chimeway import Batch, Daily, InvalidWorkflow, Step, Workflow
from chimeway.dsl import MAX_BATCH_ITEMS, MAX_BATCH_WINDOW

NEW_YORK = "America/New_York"


def digest_workflow(batch: Batch) -> Workflow:
    return Workflow("comments", 1, [batch, Step("email", "email")])


def test_a_leading_batch_is_kept_apart_from_the_steps() -> None:
    batch = Batch(window=timedelta(minutes=10), key="post.id", max_items=20)
    workflow = digest_workflow(batch)
    assert workflow.batch == batch
    assert [s.key for s in workflow.steps] == ["email"]
    assert workflow.first_step.key == "email"
    assert Workflow("comments", 1, [Step("email", "email")]).batch is None


@pytest.mark.parametrize(
    "batch",
    [
        Batch(window=600, key="post_id"),
        Batch(window=timedelta(hours=1), max_items=50),
        Batch(window=Daily(9)),
        Batch(window=Daily(8, 30, tz="Europe/Paris"), key="thread.id", max_items=2),
    ],
)
def test_round_trip_through_step_rows(batch: Batch) -> None:
    workflow = digest_workflow(batch)
    rows = workflow.step_rows()
    assert "batch" in rows[0]["config"]
    again = Workflow.from_rows("comments", 1, rows)
    assert again == workflow and again.checksum() == workflow.checksum()


def test_the_batch_is_part_of_the_checksum() -> None:
    plain = Workflow("comments", 1, [Step("email", "email")])
    a = digest_workflow(Batch(window=600))
    b = digest_workflow(Batch(window=601))
    c = digest_workflow(Batch(window=600, key="post_id"))
    assert len({plain.checksum(), a.checksum(), b.checksum(), c.checksum()}) == 4


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Workflow("w", 1, [Step("e", "email"), Batch(window=60)]), "steps[1]: a Batch"),
        (lambda: Workflow("w", 1, [Batch(window=60)]), "a workflow needs at least one step"),
        (lambda: Batch(window=0), "Batch: window: must be positive"),
        (lambda: Batch(window=timedelta(seconds=1.5)), "must be whole seconds"),
        (lambda: Batch(window=MAX_BATCH_WINDOW + timedelta(seconds=1)), "is too large"),
        (lambda: Batch(window="1h"), "must be a timedelta, an int number of seconds or a Daily"),
        (lambda: Batch(window=True), "must be a timedelta"),
        (lambda: Batch(window=60, max_items=1), "max_items: input should be greater"),
        (lambda: Batch(window=60, max_items=MAX_BATCH_ITEMS + 1), "max_items"),
        (lambda: Batch(window=60, key=""), "key: must not be blank"),
        (lambda: Batch(window=60, size=3), "size: unexpected field"),
        (Batch, "window: required"),
        (lambda: Daily(24), "Daily: hour: input should be less than or equal to 23"),
        (lambda: Daily(9, 60), "Daily: minute"),
        (lambda: Daily(9, tz="Mars/Olympus"), "tz: must be 'recipient' or an IANA time zone"),
    ],
)
def test_rejected(factory: Any, message: str) -> None:
    with pytest.raises(InvalidWorkflow) as raised:
        factory()
    assert message in str(raised.value)


def test_batch_keys_from_params() -> None:
    batch = Batch(window=60, key="post.id")
    assert batch.key_of({"post": {"id": 7}}) == "7"
    assert batch.key_of({"post": {"id": "p-1"}}) == "p-1"
    assert batch.key_of({"post": {"id": True}}) == "true"
    assert batch.key_of({"post": {"id": None}}) is None
    assert batch.key_of({"post": {"id": [1]}}) is None
    assert batch.key_of({"post": 3}) is None
    assert batch.key_of({}) is None
    assert Batch(window=60).key_of({}) == ""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_fixed_window_counts_from_the_first_item() -> None:
    assert Batch(window=600).closes_at(utc(2026, 3, 7, 15, 0)) == utc(2026, 3, 7, 15, 10)


# America/New_York in 2026: clocks go forward on 8 March (02:00 EST -> 03:00 EDT) and back
# on 1 November (02:00 EDT -> 01:00 EST).


def test_a_daily_window_across_the_spring_change_is_23_hours_long() -> None:
    batch = Batch(window=Daily(9, 0))
    opened = utc(2026, 3, 7, 14, 0)  # 09:00 EST on Saturday: just after that day's close
    closes = batch.closes_at(opened, NEW_YORK)
    assert closes == utc(2026, 3, 8, 13, 0)  # 09:00 EDT on Sunday
    assert closes.astimezone(ZoneInfo(NEW_YORK)).hour == 9
    assert closes - opened == timedelta(hours=23)


def test_a_daily_window_across_the_autumn_change_is_25_hours_long() -> None:
    batch = Batch(window=Daily(9, 0))
    opened = utc(2026, 10, 31, 13, 0)  # 09:00 EDT on Saturday
    closes = batch.closes_at(opened, NEW_YORK)
    assert closes == utc(2026, 11, 1, 14, 0)  # 09:00 EST on Sunday
    assert closes - opened == timedelta(hours=25)


def test_a_daily_time_in_the_spring_gap_closes_when_the_gap_ends() -> None:
    batch = Batch(window=Daily(2, 30))
    closes = batch.closes_at(utc(2026, 3, 7, 12, 0), NEW_YORK)
    assert closes == utc(2026, 3, 8, 7, 0)  # 03:00 EDT: 02:30 does not exist that night


def test_a_repeated_daily_time_closes_at_its_later_occurrence() -> None:
    batch = Batch(window=Daily(1, 30))
    closes = batch.closes_at(utc(2026, 10, 31, 12, 0), NEW_YORK)
    assert closes == utc(2026, 11, 1, 6, 30)  # 01:30 EST, not 01:30 EDT (05:30 UTC)


def test_the_zone_of_a_daily_window() -> None:
    opened = utc(2026, 6, 1, 12, 0)
    # The recipient's zone; without one (or one the server does not know), UTC.
    assert Batch(window=Daily(9)).closes_at(opened, "Europe/Paris") == utc(2026, 6, 2, 7, 0)
    assert Batch(window=Daily(9)).closes_at(opened, None) == utc(2026, 6, 2, 9, 0)
    assert Batch(window=Daily(9)).closes_at(opened, "Nowhere/Else") == utc(2026, 6, 2, 9, 0)
    # A named zone wins over the recipient's.
    named = Batch(window=Daily(9, tz="Asia/Tokyo"))
    assert named.closes_at(opened, "Europe/Paris") == utc(2026, 6, 2, 0, 0)
    # Strictly after: opened at the boundary, it closes the next day.
    assert Batch(window=Daily(12)).closes_at(opened, None) == utc(2026, 6, 2, 12, 0)
