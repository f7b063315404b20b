"""PostgreSQL itself stores whatever the sanitiser returns and whatever the input checks
accept: the unit properties hold against the real server, not only against ``json.dumps``."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from chimeway.errors import InvalidTrigger
from chimeway.inputs import MAX_IDENTIFIER_CHARS, identifier, json_object
from chimeway.redaction import sanitize_json, sanitize_text
from tests.unit.test_input_properties import OBJECTS, TEXT, VALUES

PROPERTY = settings(database=None, deadline=None, max_examples=60)


@pytest.fixture(scope="module")
def conn(shared_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(shared_db, autocommit=True) as connection:
        yield connection


def _stored_json(conn: psycopg.Connection[Any], value: Any) -> Any:
    row = conn.execute("SELECT %s::jsonb", [Jsonb(value)]).fetchone()
    assert row is not None
    return _decimals(row[0])


def _decimals(value: Any) -> Any:
    """``value`` with every number as the Decimal jsonb keeps (``5e16`` comes back an int)."""
    if isinstance(value, dict):
        return {key: _decimals(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_decimals(child) for child in value]
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


@PROPERTY
@given(value=VALUES)
def test_postgres_stores_every_sanitised_answer(conn: psycopg.Connection[Any], value: Any) -> None:
    result, notes = sanitize_json(value, max_depth=8, max_bytes=2000)
    assert _stored_json(conn, result) == _decimals(result)
    assert _stored_json(conn, notes) == notes


@PROPERTY
@given(text=TEXT | st.text(min_size=300))
def test_postgres_stores_every_sanitised_text(conn: psycopg.Connection[Any], text: str) -> None:
    result, _ = sanitize_text(text, 255)
    assert conn.execute("SELECT %s::text", [result]).fetchone() == (result,)


@PROPERTY
@given(value=OBJECTS)
def test_postgres_stores_every_accepted_object(conn: psycopg.Connection[Any], value: Any) -> None:
    try:
        accepted = json_object("params", value, InvalidTrigger)
    except InvalidTrigger:
        return
    assert _stored_json(conn, accepted) == _decimals(accepted)


def test_the_longest_identifier_fits_a_unique_index(conn: psycopg.Connection[Any]) -> None:
    longest = identifier("tenant_id", "😀" * MAX_IDENTIFIER_CHARS, InvalidTrigger)
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMP TABLE ids (id text PRIMARY KEY)")
        conn.execute("INSERT INTO ids VALUES (%s)", [longest])
        assert conn.execute("SELECT count(*) FROM ids").fetchone() == (1,)
