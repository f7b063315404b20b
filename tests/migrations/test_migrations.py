"""The migration runner against real, empty databases."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
import pytest

from chimeway import migrations
from chimeway.errors import MigrationError
from chimeway.migrations import Migration
from chimeway.types import PG_ENUMS
from tests.conftest import Databases


def describe(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return migrations.describe_schema(conn)


def applied(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT line, version FROM chimeway_migrations ORDER BY 1, 2")
        return rows.fetchall()


@pytest.fixture(scope="module")
def migrated(databases: Databases) -> Iterator[list[tuple[str, str, str]]]:
    """The schema of a database the runner migrated (a fresh clone of the session's
    template), described once: the tests below only compare against it."""
    for url in databases.create():
        yield describe(url)


def test_migrations_give_exactly_the_committed_snapshot(
    migrated: list[tuple[str, str, str]], empty_db: str
) -> None:
    snapshot = (resources.files("chimeway.sql") / "schema.sql").read_text(encoding="utf-8")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(snapshot.encode())
    expected = describe(empty_db)
    assert expected, "the snapshot created nothing"
    assert migrated == expected, (
        "migrations and chimeway/sql/schema.sql disagree: run scripts/update-schema-snapshot"
    )


def test_postgres_enums_agree_with_python(db: psycopg.Connection[Any]) -> None:
    rows = migrations.enum_labels(db)  # reads only: the session's migrated database
    assert set(rows) == set(PG_ENUMS)
    for name, enum in PG_ENUMS.items():
        assert rows[name] == [member.value for member in enum], name


def test_migrate_twice_applies_nothing_the_second_time(empty_db: str) -> None:
    first = migrations.migrate(empty_db)
    ours = sorted(m.version for m in migrations.chimeway_migrations())
    assert [(m.line, m.version) for m in first.applied][1:] == [("chimeway", v) for v in ours]
    assert first.applied[0].line == "procrastinate"
    second = migrations.migrate(empty_db)
    assert second.applied == []
    assert second.already_applied == len(first.applied)
    with psycopg.connect(empty_db) as conn:
        states = [s.state for s in migrations.status(conn)]
    assert states == ["applied"] * len(first.applied)


def test_status_lists_pending_on_an_empty_database(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        rows = migrations.status(conn)
    assert [r.state for r in rows] == ["pending"] * len(rows)
    assert rows[0].line == "procrastinate"
    assert all(r.applied_at is None for r in rows)


def test_concurrent_migrate_runs_end_with_one_set_of_migrations(empty_db: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            migrations.migrate(empty_db)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    expected = [(m.line, m.version) for m in migrations.planned([])]
    assert applied(empty_db) == sorted(expected)


BROKEN = Migration(
    line="chimeway",
    version="9999",
    name="broken",
    sql=(
        "-- first statement works\n"
        "CREATE TABLE chimeway_probe (id int);\n"
        "\n"
        "INSERT INTO chimeway_probe VALUES (1);\n"
        "INSERT INTO chimeway_missing_table VALUES (1);\n"
    ),
)


def test_failing_migration_names_file_and_statement_and_keeps_prior_state(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations.migrate(empty_db)
    before = describe(empty_db)
    real = migrations.chimeway_migrations
    monkeypatch.setattr(migrations, "chimeway_migrations", lambda: [*real(), BROKEN])

    with pytest.raises(MigrationError) as info:
        migrations.migrate(empty_db)

    message = info.value.message
    assert "chimeway/sql/migrations/9999_broken.sql" in message
    assert "line 5" in message
    assert "INSERT INTO chimeway_missing_table" in message
    assert "\n" not in message
    assert describe(empty_db) == before  # the probe table was rolled back too
    assert ("chimeway", "9999") not in applied(empty_db)


def test_edited_applied_migration_is_refused(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations.migrate(empty_db)
    edited = [
        Migration(m.line, m.version, m.name, m.sql + "\n-- edited\n")
        for m in migrations.chimeway_migrations()
    ]
    monkeypatch.setattr(migrations, "chimeway_migrations", lambda: edited)
    with psycopg.connect(empty_db) as conn:
        assert "modified" in [s.state for s in migrations.status(conn)]
    with pytest.raises(MigrationError, match="edited after they were applied"):
        migrations.migrate(empty_db)


def test_printed_sql_builds_the_same_schema_and_tracking(
    migrated: list[tuple[str, str, str]], empty_db: str
) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(migrations.render_sql().encode())
    assert describe(empty_db) == migrated
    assert migrations.migrate(empty_db).applied == []


def test_a_procrastinate_schema_managed_elsewhere_is_left_alone(
    migrated: list[tuple[str, str, str]], empty_db: str
) -> None:
    """The adopter's case: Procrastinate's schema came from someone else's tool. Only
    Chimeway's line is applied, the run says so, and the result is the same schema."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(migrations.procrastinate_baseline().sql.encode())
    notes: list[str] = []
    result = migrations.migrate(empty_db, report=notes.append)
    assert result.procrastinate_external
    assert [m.line for m in result.applied] == ["chimeway"] * len(migrations.chimeway_migrations())
    assert notes[0] == migrations.EXTERNAL_NOTE
    assert describe(empty_db) == migrated
    assert {line for line, _ in applied(empty_db)} == {"chimeway"}
    with psycopg.connect(empty_db) as conn:
        assert {s.line for s in migrations.status(conn)} == {"chimeway"}
        assert all(s.state == "applied" for s in migrations.status(conn))
    again = migrations.migrate(empty_db)
    assert (again.applied, again.procrastinate_external) == ([], True)


def test_an_outdated_external_procrastinate_schema_is_refused_naming_what_lacks(
    empty_db: str,
) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(migrations.procrastinate_baseline().sql.encode())
        conn.execute("DROP FUNCTION procrastinate_defer_jobs_v1")
    with pytest.raises(MigrationError, match="lacks procrastinate_defer_jobs_v1") as caught:
        migrations.migrate(empty_db)
    assert "apply Procrastinate's own migrations first" in str(caught.value)
    assert applied(empty_db) == []


def test_printed_chimeway_only_sql_completes_an_external_procrastinate_schema(
    migrated: list[tuple[str, str, str]], empty_db: str
) -> None:
    script = migrations.render_sql(chimeway_only=True)
    assert "CREATE TABLE procrastinate_jobs" not in script
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(migrations.procrastinate_baseline().sql.encode())
        conn.execute(script.encode())
    assert describe(empty_db) == migrated
    after = migrations.migrate(empty_db)
    assert (after.applied, after.procrastinate_external) == ([], True)


def test_migrate_on_joins_the_callers_transaction(
    migrated: list[tuple[str, str, str]], empty_db: str
) -> None:
    """What the Alembic and Django helpers run: every migration in the caller's
    transaction, so its rollback leaves nothing and its commit everything."""
    with psycopg.connect(empty_db) as conn:
        conn.execute("CREATE TABLE app_things (id int)")
        migrations.migrate_on(conn)
        conn.rollback()
        assert conn.execute("SELECT to_regclass('chimeway_events')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('app_things')").fetchone() == (None,)
        result = migrations.migrate_on(conn)
        conn.commit()
    assert len(result.applied) == len(migrations.planned([]))
    assert describe(empty_db) == migrated


def test_migrate_gives_the_job_fetch_custom_plans_again_after_it_was_replaced(
    empty_db: str,
) -> None:
    first = migrations.migrate(empty_db)
    assert first.pinned == [f"{migrations.fetch_function()}(character varying[],bigint)"]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert migrations.fetch_plans_pinned(conn)
        # What a Procrastinate migration that replaces the function does to its settings.
        definition = conn.execute(
            "SELECT pg_get_functiondef(%s::regproc)", [migrations.fetch_function()]
        ).fetchone()
        assert definition is not None
        body = definition[0].replace(" SET plan_cache_mode TO 'force_custom_plan'\n", "")
        conn.execute(body.encode())
        assert migrations.fetch_plans_pinned(conn) is False
    again = migrations.migrate(empty_db)
    assert again.applied == []
    assert again.pinned == first.pinned
    with psycopg.connect(empty_db) as conn:
        assert migrations.fetch_plans_pinned(conn)
    assert migrations.migrate(empty_db).pinned == []


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM chimeway_workflow_steps",
        "DELETE FROM chimeway_workflow_definitions",
        "TRUNCATE chimeway_workflow_steps",
        "TRUNCATE chimeway_workflow_definitions CASCADE",
    ],
)
def test_definitions_and_steps_are_never_deleted(db: psycopg.Connection, statement: str) -> None:
    """Runs, deliveries and history refer to them without foreign keys (0011_lean_steps)."""
    definition = db.execute(
        "INSERT INTO chimeway_workflow_definitions (workflow_key, workflow_version, "
        "notification_key, checksum) VALUES ('w', 1, 'n', 'c') RETURNING id"
    ).fetchone()
    assert definition is not None
    db.execute(
        "INSERT INTO chimeway_workflow_steps (definition_id, step_key, step_order, channel, "
        "config) VALUES (%s, 's', 1, 'email', '{}')",
        [definition[0]],
    )
    with pytest.raises(psycopg.errors.RestrictViolation, match="immutable"), db.transaction():
        db.execute(statement.encode())


@pytest.mark.parametrize(("state", "due"), [("active", "now()"), ("waiting", "NULL")])
def test_a_run_waits_exactly_when_it_has_a_due_time(
    db: psycopg.Connection, state: str, due: str
) -> None:
    """The partial indexes of waiting runs are on suspended_until, so a run's moves that do
    not wait leave them alone (HOT updates); the invariant is checked."""
    db.execute(
        "INSERT INTO chimeway_events (id, tenant_id, notification_key, notification_version, "
        "idempotency_key) VALUES ('00000000-0000-0000-0000-00000000000e', 't', 'n', 1, 'k');"
        "INSERT INTO chimeway_notifications (id, event_id, tenant_id, recipient_id, assigns, "
        "contents) VALUES ('00000000-0000-0000-0000-00000000000a', "
        "'00000000-0000-0000-0000-00000000000e', 't', 'u', '{}', '{}')"
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="waiting_has_due"), db.transaction():
        db.execute(
            f"INSERT INTO chimeway_workflow_runs (tenant_id, definition_id, notification_id, "
            f"recipient_id, current_step_id, state, status_reason, suspended_until) VALUES "
            f"('t', gen_random_uuid(), '00000000-0000-0000-0000-00000000000a', 'u', "
            f"gen_random_uuid(), '{state}', 'r', {due})".encode()
        )


def test_new_ids_are_time_ordered_uuid7(db: psycopg.Connection) -> None:
    """Events, notifications, runs and deliveries take chimeway_uuid7() (0019_time_ordered_ids): a
    UUID version 7 whose first 48 bits are the creation's Unix time in ms, so new rows go to
    the right edge of the indexes led by an id. Unique (74 random bits besides the time), of
    the RFC 9562 variant, and ordered by the millisecond they were made in (not within it)."""
    defaults = db.execute(
        "SELECT table_name, column_default FROM information_schema.columns "
        "WHERE column_name = 'id' AND table_name IN ('chimeway_events', "
        "'chimeway_notifications', 'chimeway_workflow_runs', 'chimeway_deliveries')"
    ).fetchall()
    assert len(defaults) == 4
    assert {d for _, d in defaults} == {"chimeway_uuid7()"}, defaults
    clock = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    (before,) = db.execute(clock).fetchone() or (0,)
    ids = [
        r[0] for r in db.execute("SELECT chimeway_uuid7() FROM generate_series(1, 5000)").fetchall()
    ]
    (after,) = db.execute(clock).fetchone() or (0,)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    ms = [int.from_bytes(i.bytes[:6], "big") for i in ids]
    assert before <= min(ms) and max(ms) <= after
    assert ms == sorted(ms), "made one after the other, their milliseconds never go back"


def _delivery_columns(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'chimeway_deliveries'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ).fetchall()
    return [r[0] for r in rows]


def _updated_delivery_columns() -> set[str]:
    """The columns the delivery path's statements (deliveries.sql) set on a delivery."""
    text = (resources.files("chimeway.sql") / "queries" / "deliveries.sql").read_text("utf-8")
    found: set[str] = set()
    for match in re.finditer(
        r"UPDATE chimeway_deliveries(?: d)?\s+SET\s+(.*?)\s+(?:FROM|WHERE)\b", text, re.S
    ):
        found.update(re.findall(r"(?:^|,)\s*([a-z_]+)\s*=", match.group(1)))
    return found


def test_a_delivery_update_changes_only_the_rows_last_columns(db: psycopg.Connection) -> None:
    """0022_updates_logged_small: an update that keeps a row on its page is logged as the
    bytes between the first and the last changed one, so every column the delivery path
    sets comes after every column it never sets (the rendered content above all); and the
    table's fillfactor leaves room on the page for a delivery's last update."""
    columns = _delivery_columns(db)
    updated = _updated_delivery_columns()
    assert {"status", "claimed_by", "terminal_at", "planning_context"} <= updated
    assert updated <= set(columns), updated - set(columns)
    first_updated = min(columns.index(c) for c in updated)
    written_once = columns[:first_updated]
    assert "render_data" in written_once
    assert set(columns[first_updated:]) == updated, (
        f"not set by any update, yet among the updated columns: "
        f"{set(columns[first_updated:]) - updated}"
    )
    options = dict(
        db.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN "
            "('chimeway_deliveries', 'chimeway_notifications')"
        ).fetchall()
    )
    assert options == {
        "chimeway_deliveries": ["fillfactor=30"],
        "chimeway_notifications": ["fillfactor=80"],
    }


def test_moving_the_delivery_columns_keeps_every_value(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0022 moves a delivery's changing columns to the end of its row by copying them: every
    value of every delivery migrated before it is there after, under the same name, and the
    checks and indexes that read the moved columns hold again."""
    every = migrations.chimeway_migrations()
    monkeypatch.setattr(
        migrations, "chimeway_migrations", lambda: [m for m in every if m.version < "0022"]
    )
    migrations.migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert _delivery_columns(conn).index("status") < _delivery_columns(conn).index(
            "render_data"
        )
        conn.execute(
            "INSERT INTO chimeway_events (tenant_id, notification_key, notification_version, "
            "idempotency_key) VALUES ('t', 'k', 1, 'i')"
        )
        conn.execute(
            "INSERT INTO chimeway_notifications (event_id, tenant_id, recipient_id) "
            "SELECT id, 't', 'u' FROM chimeway_events"
        )
        conn.execute(
            """
            INSERT INTO chimeway_deliveries (notification_id, tenant_id, recipient_id, channel,
                render_data, status, suppression_reason, orchestration_state, next_eligible_at,
                planning_reason, planning_context, provider_message_id, retry_at, created_at,
                updated_at, status_changed_at, terminal_at, claimed_by, takeovers)
            SELECT n.id, 't', 'u', c.channel, jsonb_build_object('body', c.channel), c.status,
                c.reason::chimeway_delivery_reason, c.orchestration::chimeway_orchestration_state,
                c.eligible, c.planning, jsonb_build_object('why', c.channel), c.message,
                c.retry, c.at, c.at + interval '1 s', c.at + interval '2 s', c.terminal,
                c.claimant, c.takeovers
            FROM chimeway_notifications n, (VALUES
                ('email', 'cancelled'::chimeway_delivery_status, 'abandoned', 'ready', NULL,
                 NULL, 'pm-1', NULL, timestamptz '2026-01-02 03:04:05+00',
                 timestamptz '2026-01-02 04:00:00+00', gen_random_uuid(), 2),
                ('sms', 'failed', NULL, 'deferred', timestamptz '2026-02-01 00:00:00+00',
                 'quiet_hours', NULL, timestamptz '2026-02-01 00:05:00+00',
                 timestamptz '2026-01-03 00:00:00+00', NULL, NULL, 0)
            ) AS c (channel, status, reason, orchestration, eligible, planning, message, retry,
                at, terminal, claimant, takeovers)
            """
        )
        before = _deliveries(conn)

    monkeypatch.undo()
    assert [m.version for m in migrations.migrate(empty_db).applied] == [
        m.version for m in every if m.version >= "0022"
    ]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        after = _deliveries(conn)
        assert after == before
        assert len(after) == 2 and after[0]["claimed_by"] is not None
        assert _delivery_columns(conn)[-1] == "updated_at"
        with pytest.raises(psycopg.errors.CheckViolation, match="reason_only_when_ended"):
            conn.execute("UPDATE chimeway_deliveries SET status = 'pending' WHERE takeovers = 2")
        with pytest.raises(psycopg.errors.CheckViolation, match="takeovers"):
            conn.execute("UPDATE chimeway_deliveries SET takeovers = -1")


def _deliveries(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT * FROM chimeway_deliveries ORDER BY channel")
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur]
