"""Operator commands through click's CliRunner: explain, trace, runs, deliveries, trigger,
signal, sweep, doctor; including not-found, other-tenant and bad-JSON inputs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner, Result

from chimeway import Chimeway, Triggered, migrations
from chimeway.cli import cli
from chimeway.testing import RecordingAdapter, drain
from tests.conftest import Databases
from tests.integration.conftest import IMMEDIATE
from tests.integration.notifiers import WithWorkflow
from tests.integration.test_progression import WAIT_30M

APP = "tests.acceptance.app:build"


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", url, *args])


def start(cw: Chimeway) -> Triggered:
    result = cw.trigger(
        WithWorkflow(WAIT_30M), {"users": ["u1"]}, tenant_id="t", idempotency_key="k"
    )
    assert isinstance(result, Triggered)
    drain(cw)
    return result


@pytest.fixture
def started(cw: Chimeway) -> Triggered:
    return start(cw)


@pytest.fixture(scope="module")
def seeded(databases: Databases) -> Iterator[tuple[str, Triggered]]:
    """One committed database with one started run, shared by the tests that only read it
    through the read-only commands (explain, trace, runs list, deliveries explain)."""
    for url in databases.create():
        adapters = {c: RecordingAdapter() for c in ("in_app", "email", "sms", "push", "chat")}
        with Chimeway(url, default_retry=IMMEDIATE, adapters=adapters) as cw:
            yield url, start(cw)


def test_explain_shows_the_run(seeded: tuple[str, Triggered]) -> None:
    committed_db, started = seeded
    result = run(committed_db, "explain", "--tenant", "t", str(started.run_ids[0]))
    assert result.exit_code == 0, result.stderr
    assert "waiting_for_step_progression" in result.stdout
    assert "notice" in result.stdout
    as_json = json.loads(
        run(committed_db, "explain", "--tenant", "t", "--json", str(started.run_ids[0])).stdout
    )
    assert as_json["state"] == "waiting"
    assert as_json["id"] == str(started.run_ids[0])


def test_trace_lists_transitions_oldest_first(seeded: tuple[str, Triggered]) -> None:
    committed_db, started = seeded
    result = run(committed_db, "trace", "--tenant", "t", str(started.run_ids[0]))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "workflow_started" in lines[2]
    assert "waiting_for_step_progression" in lines[-1]
    limited = json.loads(
        run(
            committed_db,
            "trace",
            "--tenant",
            "t",
            "--json",
            "--limit",
            "1",
            str(started.run_ids[0]),
        ).stdout
    )
    assert [t["reason"] for t in limited] == ["workflow_started"]


def test_runs_list_filters(seeded: tuple[str, Triggered]) -> None:
    committed_db, started = seeded
    listed = json.loads(run(committed_db, "runs", "list", "--tenant", "t", "--json").stdout)
    assert [r["id"] for r in listed] == [str(started.run_ids[0])]
    none = json.loads(
        run(committed_db, "runs", "list", "--tenant", "t", "--state", "completed", "--json").stdout
    )
    assert none == []
    other = json.loads(
        run(committed_db, "runs", "list", "--tenant", "t", "--workflow", "nope", "--json").stdout
    )
    assert other == []
    table = run(committed_db, "runs", "list", "--tenant", "t")
    assert "escalate" in table.stdout
    bad = run(committed_db, "runs", "list", "--tenant", "t", "--state", "sleeping")
    assert bad.exit_code == 1
    assert "unknown run state 'sleeping'" in bad.stderr


def test_deliveries_explain(seeded: tuple[str, Triggered]) -> None:
    committed_db, started = seeded
    delivery_id = str(started.delivery_ids[0])
    result = run(committed_db, "deliveries", "explain", "--tenant", "t", delivery_id)
    assert result.exit_code == 0
    assert "Why: Sent: the in_app adapter accepted it on attempt 1" in result.stdout
    assert "attempt_recorded" in result.stdout
    as_json = json.loads(
        run(committed_db, "deliveries", "explain", "--tenant", "t", "--json", delivery_id).stdout
    )
    assert as_json["status"] == "succeeded"


@pytest.mark.parametrize(
    "command",
    [["explain"], ["trace"], ["deliveries", "explain"]],
)
@pytest.mark.parametrize("target", ["other-tenant", "unknown", "malformed"])
def test_not_found_is_one_line_and_exit_1(
    seeded: tuple[str, Triggered], command: list[str], target: str
) -> None:
    committed_db, started = seeded
    real = started.delivery_ids[0] if command[0] == "deliveries" else started.run_ids[0]
    tenant, ident = {
        "other-tenant": ("t2", str(real)),
        "unknown": ("t", str(uuid.uuid4())),
        "malformed": ("t", "not-a-uuid"),
    }[target]
    result = run(committed_db, *command, "--tenant", tenant, ident)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "not found" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_trigger_command(committed_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
    args = [
        "trigger",
        "--app",
        APP,
        "escalation",
        "--tenant",
        "t",
        "--idempotency-key",
        "k1",
        "--params",
        '{"users": ["u1", "u2"]}',
    ]
    first = run(committed_db, *args)
    assert first.exit_code == 0, first.stderr
    assert "2 notification(s), 2 delivery(ies), 2 run(s)" in first.stdout
    again = run(committed_db, *args)
    assert again.stdout.startswith("Duplicate: event")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{users: }", "--params is not valid JSON"),
        ("[1, 2]", "--params must be a JSON object, got list"),
    ],
)
def test_trigger_rejects_bad_json(
    committed_db: str, monkeypatch: pytest.MonkeyPatch, params: str, message: str
) -> None:
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
    result = run(
        committed_db,
        "trigger",
        "--app",
        APP,
        "escalation",
        "--tenant",
        "t",
        "--idempotency-key",
        "k",
        "--params",
        params,
    )
    assert result.exit_code == 1
    assert message in result.stderr


def test_trigger_unknown_notifier_and_missing_app(
    committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
    unknown = run(
        committed_db, "trigger", "--app", APP, "nope", "--tenant", "t", "--idempotency-key", "k"
    )
    assert unknown.exit_code == 1
    assert "no notifier 'nope' is registered (registered: escalation)" in unknown.stderr
    no_app = run(committed_db, "trigger", "escalation", "--tenant", "t", "--idempotency-key", "k")
    assert no_app.exit_code == 1
    assert "trigger needs --app" in no_app.stderr
    bad_app = run(
        committed_db,
        "trigger",
        "--app",
        "no_such_module:x",
        "e",
        "--tenant",
        "t",
        "--idempotency-key",
        "k",
    )
    assert "cannot import 'no_such_module'" in bad_app.stderr


def test_signal_command(committed_db: str, started: Triggered, cw: Chimeway) -> None:
    result = run(
        committed_db,
        "signal",
        "--tenant",
        "t",
        "--actor",
        "u1",
        "--payload",
        '{"source": "inbox"}',
        "--idempotency-key",
        "s1",
        "chimeway.notification.read",
    )
    assert result.exit_code == 0, result.stderr
    assert "recorded; a worker routes it" in result.stdout
    again = run(
        committed_db,
        "signal",
        "--tenant",
        "t",
        "--actor",
        "u1",
        "--idempotency-key",
        "s1",
        "chimeway.notification.read",
    )
    assert again.stdout.startswith("Duplicate: signal")
    bad = run(committed_db, "signal", "--tenant", "t", "--actor", "u1", "--payload", "[]", "x")
    assert bad.exit_code == 1
    assert "--payload must be a JSON object" in bad.stderr
    blank = run(committed_db, "signal", "--tenant", " ", "--actor", "u1", "x")
    assert "tenant_id must be a non-blank string" in blank.stderr


def test_sweep_command(committed_db: str) -> None:
    result = run(committed_db, "sweep")
    assert result.exit_code == 0
    assert result.stdout.startswith("Sweep done: 0 due run(s) progressed")


def test_doctor_fails_without_workers_and_passes_with_one(committed_db: str) -> None:
    failing = run(committed_db, "doctor")
    assert failing.exit_code == 1
    assert "FAIL  workers seen recently" in failing.stdout
    assert "ok    LISTEN/NOTIFY works" in failing.stdout
    with psycopg.connect(committed_db) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    passing = run(committed_db, "doctor")
    assert passing.exit_code == 0, passing.stdout
    assert passing.stdout.strip().endswith("8 ok, 0 failing.")
    assert "ok    job fetch plans per call" in passing.stdout


def test_doctor_reports_a_fetch_function_without_custom_plans(committed_db: str) -> None:
    function = migrations.fetch_function()
    with psycopg.connect(committed_db, autocommit=True) as conn:
        conn.execute(f"ALTER FUNCTION {function} RESET plan_cache_mode".encode())
    assert "FAIL  job fetch plans per call" in run(committed_db, "doctor").stdout
    assert "Set custom plans for the job fetch" in run(committed_db, "migrate").stdout
    assert "ok    job fetch plans per call" in run(committed_db, "doctor").stdout


def test_doctor_reports_overdue_waits_and_pending_migrations(
    committed_db: str, started: Triggered, empty_db: str
) -> None:
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "UPDATE chimeway_workflow_runs SET suspended_until = now() - interval '1 hour'"
        )
    assert "FAIL  no overdue waits: 1 waiting run(s)" in run(committed_db, "doctor").stdout
    fresh = run(empty_db, "doctor")
    assert fresh.exit_code == 1
    assert "FAIL  migrations current" in fresh.stdout
    down = run("postgresql://nobody@127.0.0.1:1/x", "doctor")
    assert down.exit_code == 1
    assert "FAIL  database reachable" in down.stdout


def test_worker_with_a_bad_app_fails_fast(committed_db: str) -> None:
    result = run(committed_db, "worker", "--app", "json:dumps")
    assert result.exit_code == 1
    assert "json:dumps is neither a Chimeway instance nor a factory" in result.stderr
    missing = run(committed_db, "worker", "--app", "json:nope")
    assert missing.exit_code == 1
    assert "module 'json' has no attribute 'nope'" in missing.stderr
    unimportable = run(committed_db, "worker", "--app", "nosuchmod:x")
    assert unimportable.exit_code == 1
    assert "cannot import 'nosuchmod' for --app" in unimportable.stderr


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for command in (
        "demo",
        "deliveries",
        "doctor",
        "explain",
        "migrate",
        "runs",
        "signal",
        "sweep",
        "trace",
        "trigger",
        "worker",
    ):
        assert command in result.stdout
