"""Property-based fuzzing of the CLI, end to end against a real database: whatever the
arguments, a command succeeds (exit 0) or fails with exactly one ``Error:`` line naming a
Chimeway error (exit 1: no traceback, no "unexpected" bug report, no long echo of the
input), and a failed command writes nothing.

One database serves every example (commands commit); hypothesis' function-scoped fixture
health check is suppressed on purpose: the fixtures are the database and the environment.
"""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chimeway import Chimeway, Triggered
from chimeway.cli import cli
from tests.integration.test_fuzz import TABLES, WAITS, Fuzzed
from tests.unit.test_input_properties import TEXT

FUZZ = settings(
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
APP = "tests.integration.test_fuzz_cli:fuzz_app"


def fuzz_app() -> Chimeway:
    """The app under ``--app``: a notifier that never fails by itself, whatever its params
    (``Fuzzed``: its recipients, channels and content are what the params say)."""
    return Chimeway(os.environ["CHIMEWAY_DATABASE_URL"], notifiers=[Fuzzed(WAITS)])


ARG = st.sampled_from(["t", "u1", "k", "app.clicked", "<run>", "<delivery>"]) | TEXT
ARGS = ARG | st.text(min_size=250, max_size=300) | st.just("x" * 3000)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
JSON_TEXT = (
    st.sampled_from(['{"users": ["u1"]}', "{}", "[]", "null", "{", '{"users": "u1"}'])
    | JSON_VALUES.map(json.dumps)
    | st.fixed_dictionaries({"users": st.lists(ARG, max_size=2)}).map(json.dumps)
    | st.integers(1000, 5000).map(lambda n: "[" * n + "]" * n)
    | TEXT
)
LIMIT = st.integers(1, 10**6).map(str) | st.just(str(10**20))
CLEAN_ARGS = st.sampled_from(["t", "u1", "k", "app.clicked", "<run>", "<delivery>"])
CLEAN_JSON = st.fixed_dictionaries(
    {"users": st.lists(st.sampled_from(["u1", "u2"]), min_size=1, max_size=2)}
).map(json.dumps)


@st.composite
def commands(draw: st.DrawFn) -> list[str]:
    """A command line, clean (every argument valid) or not; positional arguments follow
    ``--`` (one may start with a dash)."""
    clean = draw(st.booleans())
    args = CLEAN_ARGS if clean else ARGS
    json_text = CLEAN_JSON if clean else JSON_TEXT

    def arg() -> str:
        return draw(args)

    kind = draw(st.sampled_from(["trigger", "signal", "explain", "trace", "runs", "deliveries"]))
    tenant = arg()
    if kind == "trigger":
        notifier = "fuzzed" if clean else draw(st.sampled_from(["fuzzed"]) | ARGS)
        return [
            "trigger", "--app", APP, "--tenant", tenant, "--idempotency-key", arg(),
            "--params", draw(json_text), "--", notifier,
        ]  # fmt: skip
    if kind == "signal":
        payload = draw(st.none() | json_text)
        key = draw(st.none() | args)
        return [
            "signal", "--app", APP, "--tenant", tenant, "--actor", arg(),
            *(["--payload", payload] if payload is not None else []),
            *(["--idempotency-key", key] if key is not None else []),
            "--", arg(),
        ]  # fmt: skip
    if kind == "explain":
        return ["explain", "--tenant", tenant, "--", arg()]
    if kind == "trace":
        return ["trace", "--tenant", tenant, "--limit", draw(LIMIT), "--", arg()]
    if kind == "runs":
        state = ["--state", draw(st.sampled_from(["waiting", "active"]) if clean else ARGS)]
        return [
            "runs", "list", "--tenant", tenant, "--limit", draw(LIMIT),
            *(state if draw(st.booleans()) else []),
            *(["--workflow", arg()] if draw(st.booleans()) else []),
        ]  # fmt: skip
    return ["deliveries", "explain", "--tenant", tenant, "--", arg()]


def snapshot(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()[0])  # type: ignore[index]
            for table in TABLES
        }


@pytest.fixture
def ids(committed_db: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The acceptance app's database is this one; a run and a delivery to name in commands."""
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
    with fuzz_app() as cw:
        result = cw.trigger("fuzzed", {"users": ["u1"]}, tenant_id="t", idempotency_key="seed")
    assert isinstance(result, Triggered)
    return {"<run>": str(result.run_ids[0]), "<delivery>": str(result.delivery_ids[0])}


@FUZZ
@given(argv=commands())
def test_every_command_succeeds_or_fails_in_one_typed_line_and_writes_nothing(
    committed_db: str, ids: dict[str, str], argv: list[str]
) -> None:
    argv = [ids.get(arg, arg) for arg in argv]
    before = snapshot(committed_db)
    result = CliRunner().invoke(cli, ["--database-url", committed_db, *argv])
    event(f"{argv[0]}: exit {result.exit_code}")
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        assert "unexpected" not in lines[0], f"not a Chimeway error: {lines[0]}"
        assert len(lines[0]) < 600, "the error echoes too much of the input"
        assert snapshot(committed_db) == before, "a failed command left rows behind"
