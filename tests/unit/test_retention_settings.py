"""Retention settings: defaults as documented, and bad values refused with a typed error."""

from __future__ import annotations

import datetime as dt

import pytest

from chimeway import InvalidArgument, Retention, Settings

DAY = dt.timedelta(days=1)


def test_defaults_are_the_documented_ones() -> None:
    rules = Retention()
    assert (rules.jobs, rules.history, rules.signals, rules.webhooks, rules.processes) == (
        7 * DAY,
        90 * DAY,
        30 * DAY,
        30 * DAY,
        DAY,
    )
    assert rules.cron == "23 * * * *"
    assert rules.batch_size == 500
    assert Settings().retention == rules


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": True},
        {"jobs": dt.timedelta(0)},
        {"history": -DAY},
        {"signals": 30},
    ],
)
def test_bad_values_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument, match=r"batch_size|retention"):
        Retention(**options)  # type: ignore[arg-type]


def test_processes_must_outlive_stuck_after() -> None:
    with pytest.raises(InvalidArgument, match="longer than stuck_after"):
        Settings(stuck_after=dt.timedelta(days=2), retention=Retention(processes=DAY))
    assert Settings(stuck_after=dt.timedelta(days=2), retention=Retention(processes=None))
