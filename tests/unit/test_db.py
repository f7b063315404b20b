"""Named queries and connection helpers (no database needed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chimeway import db
from chimeway.errors import DatabaseUnavailable

PACKAGE = Path(db.__file__).parent


def used_query_names() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "query"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names.add(node.args[0].value)
    return names


def test_every_named_query_is_used_and_every_used_name_exists() -> None:
    defined = set(db.queries())
    used = used_query_names()
    assert used - defined == set(), "code uses queries that no .sql file defines"
    assert defined - used == set(), "queries defined but never used"


def test_parse_rejects_duplicate_and_empty_queries() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        db._parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "x.sql")
    with pytest.raises(ValueError, match="is empty"):
        db._parse("-- name: a\n\n-- name: b\nSELECT 2\n", "x.sql")


def test_parse_splits_on_name_headers() -> None:
    parsed = db._parse("-- preamble\n-- name: one\nSELECT 1\n\n-- name: two\nSELECT 2;\n", "x")
    assert parsed == {"one": "SELECT 1", "two": "SELECT 2;"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cret@db.example:6543/app", "postgresql://bob:***@db.example:6543/app"),
        ("host=h user=u password=pw dbname=d", "postgresql://u:***@h:5432/d"),
        ("postgresql://bob@h/app", "postgresql://bob@h:5432/app"),
    ],
)
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert db.redact_url(url) == shown


def test_connect_failure_names_the_database_without_password() -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        db.connect("postgresql://bob:hunter2@127.0.0.1:1/nowhere")
    assert "postgresql://bob:***@127.0.0.1:1/nowhere" in info.value.message
    assert "hunter2" not in info.value.message


def _literal_ends_on_its_line(line: str) -> bool:
    """Whether every string literal opened on ``line`` closes on it (a comment ends it)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == "'":
            quoted = not quoted  # '' inside a literal toggles twice
        elif not quoted and line.startswith("--", i):
            break
    return not quoted


def test_no_string_literal_of_a_query_spans_lines() -> None:
    # compact() strips every line: a literal spanning lines would lose its indentation.
    for name, sql in db.sources().items():
        if "$$" in sql:
            assert db.query(name) == f"-- chimeway: {name}\n{sql}"  # sent as it is
            continue
        for line in sql.splitlines():
            assert _literal_ends_on_its_line(line), f"{name}: {line!r}"


def test_every_query_as_sent_fits_psycopg_s_cache_of_converted_queries() -> None:
    # Longer ones would have their placeholders parsed again on every call.
    for name, sql in db.queries().items():
        assert len(sql) <= db.PSYCOPG_CACHED_LENGTH, f"{name}: {len(sql)} characters"
        assert len(set(re.findall(r"%\((\w+)\)[sbt]", sql))) <= 50, name


def test_compact_keeps_the_statement_and_drops_what_explains_it() -> None:
    sql = (
        "-- Why this query exists.\n"
        "SELECT 'a  -- not a comment' AS x,\n"
        "       %(id)s::uuid  -- the id\n"
        "\n"
        "    -- a comment line\n"
        "FROM t"
    )
    assert db.compact("things_list", sql) == (
        "-- chimeway: things_list\n"
        "SELECT 'a  -- not a comment' AS x,\n"
        "%(id)s::uuid  -- the id\n"
        "FROM t"
    )
    assert db.query("delivery_claim").startswith("-- chimeway: delivery_claim\n")


def test_a_query_without_an_optional_part_leaves_out_its_lines_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = (
        "SELECT a\n"
        "  -- optional: extra\n"
        "  , b\n"
        "  -- end: extra\n"
        "FROM t\n"
        "-- optional: join\n"
        "JOIN u ON true\n"
        "-- end: join\n"
        "WHERE x\n"
        "  -- optional: extra\n"
        "  AND y\n"
        "  -- end: extra\n"
    )
    monkeypatch.setattr(db, "sources", lambda: {"things": source})
    monkeypatch.setattr(db, "queries", lambda: {"things": db.compact("things", source)})
    db._variant.cache_clear()
    try:
        assert db.optional_parts("things") == {"extra", "join"}
        assert (
            db.query("things")
            == "-- chimeway: things\nSELECT a\n, b\nFROM t\nJOIN u ON true\nWHERE x\nAND y"
        )
        assert (
            db.query("things", ["extra"])
            == "-- chimeway: things\nSELECT a\nFROM t\nJOIN u ON true\nWHERE x"
        )
        assert (
            db.query("things", ("extra", "join"))
            == "-- chimeway: things\nSELECT a\nFROM t\nWHERE x"
        )
        with pytest.raises(KeyError, match="no optional part nope"):
            db.query("things", ["nope"])
    finally:
        db._variant.cache_clear()


def test_every_optional_part_of_a_query_ends() -> None:
    # An `-- optional:` line without its `-- end:` would not be a part: asking for the query
    # without it would raise, and the marker would go unnoticed until then.
    for name, sql in db.sources().items():
        opened = re.findall(r"^\s*--\s*optional:\s*(\w+)\s*$", sql, re.MULTILINE)
        closed = re.findall(r"^\s*--\s*end:\s*(\w+)\s*$", sql, re.MULTILINE)
        assert sorted(opened) == sorted(closed), name
        parts = db.optional_parts(name)
        assert parts == set(opened), name
        for part in parts:
            assert len(db.query(name, [part])) < len(db.query(name)), (name, part)
