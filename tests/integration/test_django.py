"""Django (examples/django_project): Chimeway's schema from Django's migrations beside
``procrastinate.contrib.django``'s, ``manage.py chimeway``, the ``atomic()`` handover,
and a project first migrated by Procrastinate's Django app adopting Chimeway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from chimeway import migrations
from chimeway.store import migrations as tracking
from tests.integration.conftest import count

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django_project"
FULL = "shop.settings"
PROCRASTINATE_ONLY = "shop.settings_procrastinate_only"


def env(url: str, settings: str = FULL) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("CHIMEWAY_", "DJANGO_"))}
    return {
        **kept,
        "CHIMEWAY_DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": settings,
        # Ahead of an inherited PYTHONPATH (.ci/procrastinate-range puts an older
        # Procrastinate there).
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }


def manage(url: str, *args: str, settings: str = FULL) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-W", "error", "manage.py", *args],
        cwd=PROJECT,
        env=env(url, settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def chimeway_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "chimeway.cli", "--database-url", url, *args],
        cwd=ROOT,
        env=env(url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"chimeway {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def table_exists(url: str, table: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    return bool(row and row[0])


def test_the_projects_django_tests_pass_on_a_test_database_chimeway_set_up(
    empty_db: str,
) -> None:
    done = manage(empty_db, "test", "shop", "--noinput")
    assert "Ran 3 tests" in done.stderr
    assert "\nOK" in done.stderr


def test_migrate_applies_chimeways_part_beside_procrastinates_django_schema(
    empty_db: str,
) -> None:
    manage(empty_db, "migrate")
    with psycopg.connect(empty_db) as conn:
        assert migrations.procrastinate_external(conn)
        assert {s.line for s in migrations.status(conn)} == {"chimeway"}
        assert all(s.state == "applied" for s in migrations.status(conn))
        assert migrations.fetch_plans_pinned(conn)
    again = manage(empty_db, "chimeway", "migrate")
    assert "Nothing to migrate" in again.stdout
    assert migrations.EXTERNAL_NOTE in again.stderr
    status = manage(empty_db, "chimeway", "migrate", "status").stdout
    assert status.strip().splitlines()[-1] == (
        f"{len(migrations.chimeway_migrations())} applied, 0 pending."
    )


@pytest.mark.slow
def test_procrastinate_django_first_then_chimeway_migrate_then_a_worker_delivers(
    empty_db: str,
) -> None:
    # 1. The app as it was: on procrastinate.contrib.django, without Chimeway.
    manage(empty_db, "migrate", settings=PROCRASTINATE_ONLY)
    assert table_exists(empty_db, "procrastinate_jobs")
    assert not table_exists(empty_db, "chimeway_events")
    # 2. `chimeway migrate` adds Chimeway's tables and leaves Procrastinate's schema alone.
    done = chimeway_cli(empty_db, "migrate")
    assert migrations.EXTERNAL_NOTE in done.stderr
    assert f"Applied {len(migrations.chimeway_migrations())} migration(s)" in done.stdout
    # 3. Chimeway's Django app joins: its migration finds nothing left to apply.
    manage(empty_db, "migrate")
    # 4. An order placed in an atomic() block: committed with its notification and job.
    manage(empty_db, "shell", "-c", "from shop.orders import place_order; place_order('ada', 42)")
    assert count(empty_db, "SELECT count(*) FROM shop_order") == 1
    assert count(empty_db, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 1
    # 5. `manage.py chimeway worker` (CHIMEWAY_APP from settings) delivers it.
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "chimeway", "worker", "--concurrency", "2"],
        cwd=PROJECT,
        env=env(empty_db),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            count(empty_db, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'")
            < 1
        ):
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker did not deliver within 60 s"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert "adapters in_app=LoggerAdapter" in output
    assert count(empty_db, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 0


def test_a_newer_chimeways_migrations_are_applied_by_the_next_migrate(empty_db: str) -> None:
    """Upgrading Chimeway needs no new Django migration: the app applies what is pending
    after every `migrate`, once its own migration has run."""
    manage(empty_db, "migrate", settings=PROCRASTINATE_ONLY)
    *older, newest = migrations.chimeway_migrations()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        # What an older Chimeway's `migrate` left: every migration but the newest.
        tracking.create_table(conn)
        for mig in older:
            migrations._apply(conn, mig)
    # Recorded as applied by an older Chimeway's Django migration; the newest is pending.
    done = manage(empty_db, "migrate", "chimeway", "--fake")
    assert f"Chimeway: applying 1/1: {newest.label}" in done.stdout
    with psycopg.connect(empty_db) as conn:
        assert [s.state for s in migrations.status(conn)] == ["applied"] * (len(older) + 1)


def test_connection_refuses_a_database_that_is_not_postgresql() -> None:
    script = (
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3',"
        " 'NAME': ':memory:'}})\n"
        "django.setup()\n"
        "from chimeway import ConfigurationError\n"
        "from chimeway.contrib.django import connection\n"
        "try:\n"
        "    connection()\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=ROOT,
        env=env("postgresql://unused"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Django database 'default' is sqlite, not PostgreSQL"
