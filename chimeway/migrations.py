"""The one migration runner: Procrastinate's schema, then Chimeway's numbered SQL files.

Two lines of migrations are tracked in ``chimeway_migrations``:

* ``procrastinate``: on an empty database, Procrastinate's full ``schema.sql`` is applied and
  recorded under the version of the newest migration file the installed Procrastinate ships
  (the schema already contains it). Later Procrastinate upgrades apply only the migration
  files newer than the recorded version.
* ``chimeway``: ``chimeway/sql/migrations/NNNN_name.sql``, in order.

After them, every run gives Procrastinate's job-fetch functions ``plan_cache_mode =
force_custom_plan`` where they lack it (a Procrastinate migration that replaces a function
drops its settings). A cached generic plan, built while the queue was empty and analysed,
made every fetch sort the whole job table: workers drained a backlog at a few jobs per
second (research: fetch-plan-collapse.md).

Every migration runs in its own transaction together with its tracking row, under a
session advisory lock, so two deploys cannot migrate at once and a failure leaves the
previously applied state intact. :func:`migrate_on` does the same on a connection the
caller holds (an Alembic or Django migration's), each migration in a savepoint of the
caller's transaction.

A database whose Procrastinate schema someone else manages (``procrastinate.contrib.django``,
``procrastinate schema --apply``, the app's own migrations) has a ``procrastinate_jobs``
table that no ``procrastinate`` line records: the runner then applies only Chimeway's line,
says so, and leaves Procrastinate's schema to its owner, after checking that it has the
functions Chimeway calls.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Literal

import psycopg
import sqlparse
from procrastinate.schema import SchemaManager
from procrastinate.sql import queries as procrastinate_queries

from chimeway import db
from chimeway.db import Conn
from chimeway.errors import MigrationError
from chimeway.store import migrations as tracking
from chimeway.store import schema

Line = Literal["procrastinate", "chimeway"]
Report = Callable[[str], None]

_CHIMEWAY_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PROCRASTINATE_FILE = re.compile(r"^(\d{2}\.\d{2}\.\d{2}_\d{2})_.+\.sql$")
_FETCH_FUNCTION = re.compile(r"\b(procrastinate_fetch_job_v\d+)\b")


@dataclass(frozen=True)
class Migration:
    line: Line
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.line} {self.version} {self.name}"


AppliedMigration = tracking.Applied


@dataclass(frozen=True)
class MigrationStatus:
    line: str
    version: str
    name: str
    applied_at: dt.datetime | None
    state: Literal["applied", "pending", "modified"]


def chimeway_migrations() -> list[Migration]:
    """Chimeway's own migration files, in order."""
    folder = resources.files("chimeway.sql") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _CHIMEWAY_FILE.match(entry.name)
        if match:
            found.append(
                Migration(
                    line="chimeway",
                    version=match.group(1),
                    name=match.group(2),
                    sql=entry.read_text(encoding="utf-8"),
                )
            )
    return sorted(found, key=lambda m: m.version)


def _procrastinate_files() -> list[tuple[str, Path]]:
    folder = Path(SchemaManager.get_migrations_path())
    files = []
    for path in folder.glob("*.sql"):
        match = _PROCRASTINATE_FILE.match(path.name)
        if match:
            files.append((match.group(1), path))
    return sorted(files)


def procrastinate_baseline() -> Migration:
    """Procrastinate's complete schema, labelled with the newest migration it contains."""
    version = _procrastinate_files()[-1][0]
    return Migration(
        line="procrastinate",
        version=version,
        name=f"schema (procrastinate {metadata.version('procrastinate')})",
        sql=SchemaManager.get_schema(),
    )


#: Procrastinate's functions that Chimeway's own queries call (besides the job fetch).
CALLED_FUNCTIONS = ["procrastinate_defer_jobs_v1"]

EXTERNAL_NOTE = (
    "Procrastinate's schema is managed outside `chimeway migrate` (found, not recorded "
    "by it): applying only Chimeway's migrations; keep migrating Procrastinate with "
    "your own tool"
)


def planned(applied: list[AppliedMigration], *, external: bool = False) -> list[Migration]:
    """Every migration this installation knows, given what the database has applied
    (``external``: Procrastinate's schema is someone else's, so only Chimeway's line)."""
    done = [a.version for a in applied if a.line == "procrastinate"]
    if external and not done:
        return chimeway_migrations()
    if not done:
        procrastinate = [procrastinate_baseline()]
    else:
        newest = max(done)
        procrastinate = [
            Migration("procrastinate", version, path.stem, path.read_text(encoding="utf-8"))
            for version, path in _procrastinate_files()
            if version > newest
        ]
        procrastinate = [*_recorded("procrastinate", applied), *procrastinate]
    return [*procrastinate, *chimeway_migrations()]


def _recorded(line: Line, applied: list[AppliedMigration]) -> list[Migration]:
    # Already-applied entries of a line whose files are not re-read (e.g. the baseline).
    return [Migration(line, a.version, a.name, "") for a in applied if a.line == line]


def applied_migrations(conn: Conn) -> list[AppliedMigration]:
    return tracking.applied(conn)


def procrastinate_external(conn: Conn, applied: list[AppliedMigration] | None = None) -> bool:
    """Whether the database's Procrastinate schema is managed by someone else: present,
    and not recorded by ``chimeway migrate``."""
    applied = applied_migrations(conn) if applied is None else applied
    recorded = any(a.line == "procrastinate" for a in applied)
    return not recorded and tracking.procrastinate_present(conn)


def status(conn: Conn) -> list[MigrationStatus]:
    """What is applied, pending, or modified since it was applied."""
    applied = applied_migrations(conn)
    by_key = {(a.line, a.version): a for a in applied}
    rows = []
    for mig in planned(applied, external=procrastinate_external(conn, applied)):
        done = by_key.get((mig.line, mig.version))
        if done is None:
            rows.append(MigrationStatus(mig.line, mig.version, mig.name, None, "pending"))
            continue
        modified = mig.line == "chimeway" and done.checksum != mig.checksum
        rows.append(
            MigrationStatus(
                mig.line,
                mig.version,
                done.name,
                done.applied_at,
                "modified" if modified else "applied",
            )
        )
    return rows


def _statements(sql: str) -> list[tuple[int, str]]:
    """(line number, statement) pairs; chunks that hold only comments are dropped."""
    found = []
    offset = 0
    for raw in sqlparse.split(sql):
        start = max(sql.find(raw, offset), offset)
        offset = start + len(raw)
        body = sqlparse.format(raw, strip_comments=True).strip()
        if body:
            first = sql.find(body.split()[0], start)
            found.append((sql.count("\n", 0, max(first, start)) + 1, raw.strip()))
    return found


def _summary(statement: str) -> str:
    body = sqlparse.format(statement, strip_comments=True)
    text = " ".join(body.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _apply(conn: Conn, mig: Migration) -> None:
    filename = (
        f"chimeway/sql/migrations/{mig.version}_{mig.name}.sql"
        if mig.line == "chimeway"
        else f"procrastinate {mig.name}"
    )
    with conn.transaction():
        for line, statement in _statements(mig.sql):
            try:
                tracking.apply_statement(conn, statement)
            except psycopg.Error as exc:
                message = (exc.diag.message_primary or str(exc)).strip()
                raise MigrationError(
                    f"migration {filename}, line {line}, failed: {message} "
                    f"(in `{_summary(statement)}`); nothing of it was applied"
                ) from exc
        tracking.record(
            conn, line=mig.line, version=mig.version, name=mig.name, checksum=mig.checksum
        )


@dataclass(frozen=True)
class MigrateResult:
    applied: list[Migration]
    already_applied: int
    #: Job-fetch functions that were given custom plans in this run.
    pinned: list[str] = field(default_factory=list)
    #: Procrastinate's schema is someone else's: only Chimeway's line was applied.
    procrastinate_external: bool = False


def fetch_function() -> str:
    """The name of the job-fetch function the installed Procrastinate calls."""
    found = _FETCH_FUNCTION.search(procrastinate_queries["fetch_job"])
    if found is None:  # pragma: no cover - a Procrastinate we do not know
        raise MigrationError("cannot find the job-fetch function in Procrastinate's queries")
    return found.group(1)


def fetch_plans_pinned(conn: Conn) -> bool | None:
    """Whether the job-fetch function the installed Procrastinate calls plans every call
    afresh (``None``: the function does not exist; migrations are missing)."""
    settings = tracking.fetch_plan_settings(conn, fetch_function())
    return None if settings is None else "plan_cache_mode=force_custom_plan" in settings


def migrate(url: str, report: Report = lambda _msg: None) -> MigrateResult:
    """Apply every pending migration. Safe to run concurrently and repeatedly."""
    with db.connect(url, autocommit=True) as conn:
        return migrate_on(conn, report)


def migrate_on(
    conn: Conn, report: Report = lambda _msg: None, *, require_fetch: bool = True
) -> MigrateResult:
    """Apply every pending migration on ``conn``: each in a transaction of its own on an
    autocommit connection, else in a savepoint of the caller's open transaction (an
    Alembic or Django migration), which commits them with the caller's own changes.
    ``require_fetch=False``: a Procrastinate schema managed elsewhere need not have the
    installed Procrastinate's job-fetch function yet (Django applies Procrastinate's later
    migrations in the same ``migrate`` run)."""
    if not conn.autocommit:
        # The lock then lasts as long as the caller's transaction, error or not.
        tracking.lock_for_transaction(conn)
        return _migrate_locked(conn, report, require_fetch)
    if not tracking.lock_try(conn):
        report("another `chimeway migrate` holds the migration lock; waiting for it")
        tracking.lock(conn)
    try:
        return _migrate_locked(conn, report, require_fetch)
    finally:
        # On a broken connection the lock is gone with the session; keep the real error.
        with contextlib.suppress(psycopg.Error):
            tracking.unlock(conn)


def _migrate_locked(conn: Conn, report: Report, require_fetch: bool) -> MigrateResult:
    tracking.create_table(conn)
    applied = applied_migrations(conn)
    external = procrastinate_external(conn, applied)
    if external:
        report(EXTERNAL_NOTE)
        _require_procrastinate_functions(conn, require_fetch)
    _refuse_modified(conn)
    done = {(a.line, a.version) for a in applied}
    pending = [m for m in planned(applied, external=external) if (m.line, m.version) not in done]
    for index, mig in enumerate(pending, start=1):
        report(f"applying {index}/{len(pending)}: {mig.label}")
        _apply(conn, mig)
    unpinned = tracking.fetch_plans_unpinned(conn)
    if unpinned:
        report(f"custom plans for {', '.join(unpinned)}")
        tracking.pin_fetch_plans(conn)
    return MigrateResult(
        applied=pending,
        already_applied=len(done),
        pinned=unpinned,
        procrastinate_external=external,
    )


def _require_procrastinate_functions(conn: Conn, require_fetch: bool) -> None:
    needed = [fetch_function(), *CALLED_FUNCTIONS] if require_fetch else CALLED_FUNCTIONS
    missing = tracking.procrastinate_functions_missing(conn, needed)
    if missing:
        raise MigrationError(
            f"the Procrastinate schema in this database lacks {', '.join(missing)}, which "
            f"procrastinate {metadata.version('procrastinate')} (installed here) calls: apply "
            "Procrastinate's own migrations first (e.g. Django's `manage.py migrate "
            "procrastinate`, or `procrastinate schema --migrate`), then `chimeway migrate`"
        )


def pin_fetch_plans(conn: Conn) -> list[str]:
    """Give the job-fetch functions that lack it ``plan_cache_mode = force_custom_plan``
    (what every ``chimeway migrate`` does at its end); the ones it changed."""
    unpinned = tracking.fetch_plans_unpinned(conn)
    if unpinned:
        tracking.pin_fetch_plans(conn)
    return unpinned


def _refuse_modified(conn: Conn) -> None:
    modified = [s for s in status(conn) if s.state == "modified"]
    if modified:
        names = ", ".join(f"{s.version}_{s.name}" for s in modified)
        raise MigrationError(
            f"applied migration files were edited after they were applied: {names}; "
            "restore them and add a new migration instead"
        )


def render_sql(*, chimeway_only: bool = False) -> str:
    """Every migration as one SQL script, for teams that run their own migration tool.

    Applying it to an empty database leaves the same state ``chimeway migrate`` would,
    tracking rows included, so the runner can take over later. ``chimeway_only``: only
    Chimeway's line, for a database whose Procrastinate schema is managed elsewhere (the
    runner then recognises that schema as someone else's).
    """
    if chimeway_only:
        head = [
            "-- Chimeway's migrations only: Procrastinate's schema is managed elsewhere and",
            "-- must already be in the database.",
            "-- Generated by `chimeway migrate print --chimeway-only`.",
        ]
    else:
        head = [
            "-- Chimeway schema: Procrastinate's schema, then Chimeway's migrations.",
            "-- Generated by `chimeway migrate print`; run it on an empty database.",
        ]
    parts = [*head, "", tracking.table_sql() + ";"]
    for mig in planned([], external=chimeway_only):
        parts += ["", f"-- {mig.label}", mig.sql.strip(), ""]
        script = tracking.record_script(
            line=mig.line, version=mig.version, name=mig.name, checksum=mig.checksum
        )
        parts.append(script + ";")
    parts += [
        "",
        "-- Custom plans for Procrastinate's job fetch (`chimeway migrate` re-applies this",
        "-- after any Procrastinate migration; run it again after yours).",
        tracking.pin_fetch_plans_sql() + ";",
    ]
    return "\n".join(parts) + "\n"


def describe_schema(conn: Conn) -> list[tuple[str, str, str]]:
    """A canonical listing of the schema's relations, constraints, indexes, enums,
    functions and triggers, for comparing two databases."""
    return [(d.kind, d.name, d.definition) for d in schema.describe(conn)]


def enum_labels(conn: Conn) -> dict[str, list[str]]:
    """Chimeway's PostgreSQL enum types and their labels, in order."""
    return schema.enum_labels(conn)
