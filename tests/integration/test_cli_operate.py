"""The CLI's operate items: --database-url on every command, click.Choice log levels, --json
on doctor, migrate status, sweep and signal, trigger --json saying duplicate, ISO 8601 UTC
log times, and logging configured after --app is imported (the documented precedence)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from chimeway import Chimeway, logs
from chimeway.cli import cli
from tests.integration.logging_app import HANDLER
from tests.integration.test_cli_commands import APP
from tests.integration.test_worker_start import pending_email


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or None)


def every_command(group: Any = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from every_command(command, (*path, name))


def command_at(path: tuple[str, ...]) -> Any:
    command: Any = cli
    for name in path:
        command = command.commands[name]
    return command


# -- --database-url on every command ----------------------------------------------------------


@pytest.mark.parametrize("path", list(every_command()), ids=" ".join)
def test_every_command_takes_database_url(path: tuple[str, ...]) -> None:
    helped = invoke(*path, "--help")
    assert helped.exit_code == 0
    assert "--database-url" in helped.stdout
    assert any("--database-url" in p.opts for p in command_at(path).params)


def test_a_command_uses_its_own_database_url(empty_db: str) -> None:
    migrated = invoke("migrate", "--database-url", empty_db)
    assert migrated.exit_code == 0, migrated.stderr
    assert "Applied" in migrated.stdout
    bad = "postgresql://nobody@127.0.0.1:1/none"
    # The command's own URL wins over the one before it.
    status = invoke("--database-url", bad, "migrate", "status", "--database-url", empty_db)
    assert status.exit_code == 0, status.stderr
    assert "0 pending." in status.stdout
    listed = invoke("runs", "list", "--tenant", "t", "--database-url", empty_db)
    assert listed.exit_code == 0, listed.stderr
    failing = invoke("--database-url", empty_db, "migrate", "status", "--database-url", bad)
    assert failing.exit_code == 1 and failing.stderr.startswith("Error: ")


# -- --log-level is a click.Choice ------------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_bad_log_level_is_one_usage_line(command: str) -> None:
    result = invoke(command, "--log-level", "BOGUS")
    assert result.exit_code == 2
    assert "Invalid value for '--log-level'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 4


# -- --json -----------------------------------------------------------------------------------


def test_doctor_migrate_status_and_sweep_print_json(committed_db: str) -> None:
    doctor = invoke("doctor", "--json", "--database-url", committed_db)
    assert doctor.exit_code == 1  # no worker has beaten
    report = json.loads(doctor.stdout)
    assert report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["workers seen recently"]["ok"] is False
    assert checks["LISTEN/NOTIFY works"]["ok"] is True
    with psycopg.connect(committed_db) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    passing = invoke("doctor", "--json", "--database-url", committed_db)
    assert passing.exit_code == 0 and json.loads(passing.stdout)["ok"] is True

    status = json.loads(
        invoke("migrate", "status", "--json", "--database-url", committed_db).stdout
    )
    assert {row["state"] for row in status} == {"applied"}
    assert {"line", "version", "name", "applied_at", "state"} <= set(status[0])

    sweep = invoke("sweep", "--json", "--database-url", committed_db)
    assert sweep.exit_code == 0 and sweep.stderr == ""
    assert json.loads(sweep.stdout) == {
        "deferred_resumed": 0,
        "deliveries_redriven": 0,
        "runs_progressed": 0,
        "timers_armed": 0,
    }


def test_signal_prints_json_with_duplicate(committed_db: str) -> None:
    args = ["signal", "--tenant", "t", "--actor", "u1", "--idempotency-key", "s1", "--json", "x.y"]
    first = json.loads(invoke(*args, "--database-url", committed_db).stdout)
    again = json.loads(invoke(*args, "--database-url", committed_db).stdout)
    assert first["duplicate"] is False and again["duplicate"] is True
    assert first["signal_id"] == again["signal_id"]


def test_trigger_json_says_duplicate(committed_db: str) -> None:
    args = ["trigger", "--app", APP, "escalation", "--tenant", "t", "--idempotency-key", "k1"]
    args += ["--params", '{"users": ["u1"]}', "--json", "--database-url", committed_db]
    first = invoke(*args, CHIMEWAY_DATABASE_URL=committed_db)
    assert first.exit_code == 0, first.stderr
    triggered = json.loads(first.stdout)
    assert triggered["duplicate"] is False and len(triggered["delivery_ids"]) == 1
    again = json.loads(invoke(*args, CHIMEWAY_DATABASE_URL=committed_db).stdout)
    assert again == {"duplicate": True, "event_id": triggered["event_id"]}


# -- log lines --------------------------------------------------------------------------------


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("chimeway.x", logging.INFO, "f", 1, "sent", (), None)
    record.created = created
    record.action = "delivery.succeeded"  # type: ignore[attr-defined]
    return record


def test_log_times_are_iso_8601_utc() -> None:
    record = record_at(1_772_366_400.123)  # 2026-03-01T12:00:00.123Z
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["time"] == "2026-03-01T12:00:00.123Z"
    assert line["action"] == "delivery.succeeded"
    text = logs.KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert text.format(record) == (
        "2026-03-01T12:00:00.123Z INFO chimeway.x: sent action=delivery.succeeded"
    )


@pytest.fixture
def saved_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("chimeway", "procrastinate")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def run_worker(url: str, *options: str) -> Result:
    """The worker with the app that configures logging; it refuses to start (a channel
    without an adapter has deliveries waiting), after logging was set up."""
    result = invoke(
        "worker",
        "--app",
        "tests.integration.logging_app:build",
        *options,
        "--database-url",
        url,
        CHIMEWAY_DATABASE_URL=url,
    )
    assert result.exit_code == 1 and "no adapter for channel 'email'" in result.stderr
    return result


@pytest.mark.usefixtures("saved_logging")
def test_logging_is_configured_after_the_app_keeping_its_handlers(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    pending_email(make_cw())
    run_worker(committed_db)
    root = logging.getLogger()
    assert [h.get_name() for h in root.handlers] == [HANDLER]  # the app's handler stays
    assert logging.getLogger("chimeway").level == logging.INFO  # --log-level wins
    run_worker(committed_db, "--log-level", "debug")
    assert logging.getLogger("chimeway").level == logging.DEBUG
    assert logging.getLogger("procrastinate").level == logging.DEBUG


@pytest.mark.usefixtures("saved_logging")
def test_log_json_given_replaces_the_apps_handlers(
    make_cw: Callable[..., Chimeway], committed_db: str
) -> None:
    pending_email(make_cw())
    run_worker(committed_db, "--log-json", "--log-level", "WARNING")
    (handler,) = logging.getLogger().handlers
    assert handler.get_name() != HANDLER
    assert isinstance(handler.formatter, logs.JsonFormatter)
    assert logging.getLogger("chimeway").level == logging.WARNING


@pytest.mark.usefixtures("saved_logging")
def test_without_an_app_handler_chimeway_installs_its_own() -> None:
    logging.getLogger().handlers[:] = []
    logs.configure("INFO", keep_handlers=True)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.KeyValueFormatter)


ADDRESS = "ada@example.com"  # the traceback quotes source lines: they name it, not quote it


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as exc:
        return exc


def test_a_withheld_error_keeps_its_traceback_and_class_but_not_its_message() -> None:
    try:
        try:
            raise KeyError(ADDRESS)
        except KeyError:
            raise psycopg.errors.UniqueViolation(f"Key (email)=({ADDRESS}) exists") from None
    except psycopg.Error as exc:
        kind, stand_in, traceback = logs.withheld(exc)
        error = exc
    assert kind is logs.Withheld and traceback is error.__traceback__
    assert (
        str(stand_in) == "psycopg.errors.UniqueViolation (SQLSTATE 23505); its message is withheld"
    )
    chained = logs.withheld(raised(RuntimeError(ADDRESS)))
    assert "example.com" not in str(chained[1])
    caused = raised(ValueError("x"))
    caused.__cause__ = raised(OSError(ADDRESS))
    assert str(logs.withheld(caused)[1]) == (
        "builtins.ValueError, raised from OSError; its message is withheld"
    )
    line = logs.KeyValueFormatter("%(message)s").format(
        logging.LogRecord(
            "chimeway.x", logging.ERROR, __file__, 1, "failed", (), (kind, stand_in, traceback)
        )
    )
    assert "Traceback (most recent call last)" in line and __file__ in line
    assert "example.com" not in line


@pytest.mark.usefixtures("saved_logging")
@pytest.mark.parametrize("as_json", [False, True])
def test_chimeways_handler_withholds_the_messages_of_every_librarys_errors(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", as_json)
    error = raised(psycopg.errors.UniqueViolation(f"Key (email)=({ADDRESS}) exists"))
    logging.getLogger("procrastinate.worker").error("Job failed", exc_info=error)
    logging.getLogger("chimeway.x").error("failed", exc_info=logs.withheld(error))
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 2
    assert err.count("UniqueViolation (SQLSTATE 23505); its message is withheld") == 2
    assert "example.com" not in err
