"""The migration runner's tracking table, its advisory lock, and the statements it applies."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import LiteralString

from psycopg import sql

from chimeway import db
from chimeway.db import Conn


@dataclass(frozen=True)
class Applied:
    line: str
    version: str
    name: str
    checksum: str
    applied_at: dt.datetime


def create_table(conn: Conn) -> None:
    conn.execute(db.query("migrations_table_create"))


def table_sql() -> LiteralString:
    """The tracking table's DDL, for ``chimeway migrate print``."""
    return db.query("migrations_table_create")


def applied(conn: Conn) -> list[Applied]:
    """Every recorded migration, oldest first; none before the table exists."""
    present = conn.execute(db.query("migrations_table_exists")).fetchone()
    if not present or not present[0]:
        return []
    with conn.cursor(row_factory=db.dataclass_row(Applied)) as cur:
        return cur.execute(db.query("migration_list")).fetchall()


def record(conn: Conn, *, line: str, version: str, name: str, checksum: str) -> None:
    conn.execute(
        db.query("migration_record"),
        {"line": line, "version": version, "name": name, "checksum": checksum},
    )


def lock_try(conn: Conn) -> bool:
    """Take the migration lock if it is free (session level)."""
    row = conn.execute(db.query("migration_lock_try")).fetchone()
    return bool(row and row[0])


def lock(conn: Conn) -> None:
    """Wait for the migration lock."""
    conn.execute(db.query("migration_lock"))


def lock_for_transaction(conn: Conn) -> None:
    """Wait for the migration lock, held until the caller's transaction ends."""
    conn.execute(db.query("migration_lock_xact"))


def unlock(conn: Conn) -> None:
    conn.execute(db.query("migration_unlock"))


def procrastinate_present(conn: Conn) -> bool:
    row = conn.execute(db.query("procrastinate_schema_present")).fetchone()
    return bool(row and row[0])


def procrastinate_functions_missing(conn: Conn, names: list[str]) -> list[str]:
    """Which of these functions the database lacks."""
    rows = conn.execute(db.query("procrastinate_functions_missing"), {"names": names})
    return [row[0] for row in rows.fetchall()]


def fetch_plans_unpinned(conn: Conn) -> list[str]:
    """Procrastinate's job-fetch functions without ``plan_cache_mode = force_custom_plan``."""
    return [row[0] for row in conn.execute(db.query("fetch_plans_unpinned")).fetchall()]


def pin_fetch_plans(conn: Conn) -> None:
    """Give every job-fetch function ``plan_cache_mode = force_custom_plan`` (idempotent)."""
    conn.execute(db.query("fetch_plans_pin"))


def pin_fetch_plans_sql() -> LiteralString:
    """The statement of :func:`pin_fetch_plans`, for ``chimeway migrate print``."""
    return db.query("fetch_plans_pin")


def fetch_plan_settings(conn: Conn, function: str) -> list[str] | None:
    """The settings of the function named ``function``; ``None`` if it does not exist."""
    row = conn.execute(db.query("fetch_plan_settings"), {"name": function}).fetchone()
    return None if row is None else list(row[0])


def apply_statement(conn: Conn, statement: str) -> None:
    """One statement of a migration file (ours or Procrastinate's), as written there."""
    conn.execute(statement.encode())


def record_script(*, line: str, version: str, name: str, checksum: str) -> str:
    """The tracking row's INSERT with its values as SQL literals, for a script."""
    statement = sql.SQL(db.query("migration_record_script")).format(
        line=sql.Literal(line),
        version=sql.Literal(version),
        name=sql.Literal(name),
        checksum=sql.Literal(checksum),
    )
    return statement.as_string(None)
