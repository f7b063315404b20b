"""Settings from CHIMEWAY_* variables: every variable documented in docs/production.md
round-trips into ChimewaySettings and into the Chimeway built without the argument; the
documented defaults are the model's; code wins over the environment; bad values name their
variable."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chimeway import Chimeway, ChimewaySettings, ConfigurationError, Maintenance
from chimeway.config import environment_table, environment_variables

PAGE = Path(__file__).resolve().parents[2] / "docs" / "production.md"
ROW = re.compile(r"^\| `(CHIMEWAY_\w+)` \| `([\w.]+)` \| `([^`]*)` \|", re.MULTILINE)
NOWHERE = "postgresql://127.0.0.1:1/none"  # Chimeway() does not connect until it is used

#: A value other than the default for each argument: (as the variable spells it, as read).
SAMPLES: dict[str, tuple[str, Any]] = {
    "pool_min_size": ("3", 3),
    "pool_max_size": ("25", 25),
    "pool_timeout": ("7.5", 7.5),
    "stuck_after": ("PT10M", dt.timedelta(minutes=10)),
    "delivery_batch_size": ("20", 20),
    "send_concurrency": ("8", 8),
    "send_timeout": ("PT45S", dt.timedelta(seconds=45)),
    "max_takeovers": ("5", 5),
    "unsubscribe_ttl": ("P30D", dt.timedelta(days=30)),
    "default_retry.max_attempts": ("9", 9),
    "default_retry.base_delay": ("PT2S", dt.timedelta(seconds=2)),
    "default_retry.max_delay": ("00:30:00", dt.timedelta(minutes=30)),
    "default_retry.jitter": ("0.25", 0.25),
    "maintenance.sweep_cron": ("*/5 * * * *", "*/5 * * * *"),
    "maintenance.stalled_cron": ("*/2 * * * *", "*/2 * * * *"),
    "maintenance.stalled_after": ("PT2M", dt.timedelta(minutes=2)),
    "maintenance.redrive_after": ("PT15M", dt.timedelta(minutes=15)),
    "maintenance.timer_horizon": ("PT1H", dt.timedelta(hours=1)),
    "maintenance.batch_size": ("100", 100),
    "retention.cron": ("none", None),
    "retention.jobs": ("P14D", dt.timedelta(days=14)),
    "retention.history": ("none", None),
    "retention.signals": ("P60D", dt.timedelta(days=60)),
    "retention.webhooks": ("P1DT12H", dt.timedelta(days=1, hours=12)),
    "retention.processes": ("P2D", dt.timedelta(days=2)),
    "retention.batch_size": ("50", 50),
}


def documented() -> list[tuple[str, str, str]]:
    """(variable, argument, default) of each row of the page's table."""
    return ROW.findall(PAGE.read_text(encoding="utf-8"))


def pick(settings: Any, argument: str) -> Any:
    for part in argument.split("."):
        settings = getattr(settings, part)
    return settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in environment_variables():
        monkeypatch.delenv(variable.name, raising=False)
    yield


def test_the_page_shows_the_generated_table() -> None:
    assert environment_table() in PAGE.read_text(encoding="utf-8"), (
        "docs/production.md's settings table is stale: paste chimeway.config.environment_table()"
    )
    names = [name for name, _, _ in documented()]
    assert names == [v.name for v in environment_variables()]
    assert len(names) == len(set(names)) == len(SAMPLES)


def test_variables_are_named_like_the_chimeway_arguments() -> None:
    import inspect

    arguments = set(inspect.signature(Chimeway).parameters)
    for name, argument, _ in documented():
        top = argument.split(".")[0]
        assert top in arguments, f"{name} names no Chimeway(...) argument"
        assert name == "CHIMEWAY_" + argument.upper().replace(".", "__")


@pytest.mark.parametrize(("name", "argument", "default"), documented(), ids=str)
def test_every_documented_variable_round_trips(
    monkeypatch: pytest.MonkeyPatch, name: str, argument: str, default: str
) -> None:
    unset = pick(ChimewaySettings.from_environment(), argument)
    # The documented default, spelled as documented, reads back as the default.
    monkeypatch.setenv(name, default)
    assert pick(ChimewaySettings.from_environment(), argument) == unset
    assert unset != SAMPLES[argument][1]
    # Another value reaches the settings and the Chimeway built without the argument.
    text, expected = SAMPLES[argument]
    monkeypatch.setenv(name, text)
    assert pick(ChimewaySettings.from_environment(), argument) == expected
    with Chimeway(NOWHERE) as cw:
        if argument.startswith("pool_"):
            engine = cw.engine
            read = {
                "pool_min_size": engine._pool_sizes[0],
                "pool_max_size": engine._pool_sizes[1],
                "pool_timeout": engine._pool_timeout,
            }[argument]
        else:
            read = pick(cw.settings, argument)
        assert read == expected


def test_an_argument_given_in_code_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIMEWAY_STUCK_AFTER", "PT10M")
    monkeypatch.setenv("CHIMEWAY_MAINTENANCE__BATCH_SIZE", "7")
    monkeypatch.setenv("CHIMEWAY_POOL_MAX_SIZE", "3")
    with Chimeway(
        NOWHERE,
        stuck_after=dt.timedelta(minutes=2),
        maintenance=Maintenance(batch_size=9),
    ) as cw:
        assert cw.settings.stuck_after == dt.timedelta(minutes=2)
        assert cw.settings.maintenance.batch_size == 9
        assert cw.engine._pool_sizes == (1, 3)
        assert cw.settings.delivery_batch_size == 50  # neither: the default


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHIMEWAY_STUCK_AFTER", "soon", "CHIMEWAY_STUCK_AFTER: Input should be a valid timedelta"),
        ("CHIMEWAY_POOL_MAX_SIZE", "0", "CHIMEWAY_POOL_MAX_SIZE: Input should be greater than"),
        (
            "CHIMEWAY_MAINTENANCE__BATCH_SIZE",
            "many",
            "CHIMEWAY_MAINTENANCE__BATCH_SIZE: Input should be a valid integer",
        ),
        ("CHIMEWAY_RETENTION__BATCH_SIZE", "0", "batch_size must be a whole number"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Chimeway(NOWHERE)
