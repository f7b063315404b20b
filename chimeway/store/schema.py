"""Catalog reads: a canonical description of the schema, to compare two databases."""

from __future__ import annotations

from dataclasses import dataclass

from chimeway import db
from chimeway.db import Conn


@dataclass(frozen=True)
class Described:
    kind: str
    name: str
    definition: str


def describe(conn: Conn) -> list[Described]:
    """The schema's relations, constraints, indexes, enums, functions and triggers."""
    with conn.cursor(row_factory=db.dataclass_row(Described)) as cur:
        return cur.execute(db.query("schema_describe")).fetchall()


@dataclass(frozen=True)
class _Labels:
    name: str
    labels: list[str]


def enum_labels(conn: Conn) -> dict[str, list[str]]:
    """Chimeway's PostgreSQL enum types and their labels, in order."""
    with conn.cursor(row_factory=db.dataclass_row(_Labels)) as cur:
        return {row.name: row.labels for row in cur.execute(db.query("schema_enum_labels"))}
