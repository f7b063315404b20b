"""`chimeway migrate` from the command line."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner

from chimeway import embedded, migrations
from chimeway.cli import cli
from chimeway.errors import ConfigurationError


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


ALL = len(migrations.planned([]))  # Procrastinate's schema, then Chimeway's files


def test_migrate_then_again_then_status(empty_db: str) -> None:
    code, out, err = run("--database-url", empty_db, "migrate")
    assert code == 0, err
    assert f"Applied {ALL} migration(s)" in out
    assert f"applying 1/{ALL}" in err

    code, out, _ = run("--database-url", empty_db, "migrate")
    assert code == 0
    assert f"Nothing to migrate: all {ALL} migration(s) are applied." in out

    code, out, _ = run("--database-url", empty_db, "migrate", "status")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1] == f"{ALL} applied, 0 pending."
    for line in lines[:-1]:
        assert " applied " in line
        assert "T" in line.split()[3]  # an ISO applied-at time


def test_status_shows_pending_before_migrate(empty_db: str) -> None:
    code, out, _ = run("--database-url", empty_db, "migrate", "status")
    assert code == 0
    assert out.strip().splitlines()[-1] == f"0 applied, {ALL} pending."


def test_print_needs_no_database() -> None:
    code, out, _ = run("--database-url", "postgresql://nobody@127.0.0.1:1/none", "migrate", "print")
    assert code == 0
    assert "CREATE TABLE chimeway_events" in out
    assert "INSERT INTO chimeway_migrations" in out


def test_migrate_on_a_database_whose_procrastinate_schema_is_managed_elsewhere(
    empty_db: str,
) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(migrations.procrastinate_baseline().sql.encode())
    code, out, err = run("--database-url", empty_db, "migrate")
    assert code == 0, err
    assert migrations.EXTERNAL_NOTE in err
    chimeway_only = len(migrations.chimeway_migrations())
    assert f"Applied {chimeway_only} migration(s)" in out
    assert "procrastinate" not in out.split("Set custom plans")[0]
    code, out, _ = run("--database-url", empty_db, "migrate", "status")
    assert out.strip().splitlines()[-1] == f"{chimeway_only} applied, 0 pending."


def test_print_chimeway_only_leaves_procrastinate_out() -> None:
    code, out, _ = run("migrate", "print", "--chimeway-only")
    assert code == 0
    assert "CREATE TABLE chimeway_events" in out
    assert "CREATE TABLE procrastinate_jobs" not in out
    assert "'procrastinate'" not in out


def test_unreachable_database_is_one_line_and_exit_1() -> None:
    url = "postgresql://app:hunter2@127.0.0.1:1/appdb"
    proc = subprocess.run(
        [sys.executable, "-m", "chimeway.cli", "--database-url", url, "migrate"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("Error: cannot connect to postgresql://app:***@127.0.0.1:1/appdb")
    assert "hunter2" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verbose_shows_the_traceback() -> None:
    code, _, err = run("--database-url", "postgresql://a@127.0.0.1:1/b", "--verbose", "migrate")
    assert code == 1
    assert "Traceback" in err


def test_without_url_or_embedded_extra_the_error_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHIMEWAY_DATABASE_URL", raising=False)

    def missing(*_: object, **__: object) -> str:
        raise ConfigurationError(embedded.INSTALL_HINT)

    monkeypatch.setattr(embedded, "database_url", missing)
    code, _, err = run("migrate")
    assert code == 1
    assert "CHIMEWAY_DATABASE_URL" in err
    assert "pip install 'chimeway[embedded]'" in err
