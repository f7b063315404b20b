"""Where the database is, how to connect, and the named queries the store runs.

Queries live in ``chimeway/sql/queries/*.sql`` under ``-- name: <noun_verb>`` headers and are
loaded once. The store (``chimeway/store/``, the only code that runs SQL) refers to them by
name through :func:`query`; Python never assembles SQL.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import BaseRowFactory, RowMaker

from chimeway import embedded
from chimeway.config import ENV_DATABASE_URL
from chimeway.errors import DatabaseUnavailable

#: A synchronous psycopg connection, as every store function takes it.
Conn = psycopg.Connection[Any]

_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$", re.MULTILINE)


def _parse(text: str, origin: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = body.strip()
        if not sql:
            raise ValueError(f"{origin}: query {name!r} is empty")
        if name in queries:
            raise ValueError(f"{origin}: query {name!r} is defined twice")
        queries[name] = sql
    return queries


@cache
def queries() -> dict[str, str]:
    """Every named query, by name."""
    found: dict[str, str] = {}
    folder = resources.files("chimeway.sql") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in _parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in found:
                raise ValueError(f"{entry.name}: query {name!r} is defined in two files")
            found[name] = sql
    return found


def query(name: str) -> LiteralString:
    """The SQL of the named query; the files are ours, so it is as trusted as a literal."""
    return queries()[name]


def database_url(explicit: str | None = None, report: Callable[[str], None] = print) -> str:
    """The database URL: explicit, else ``$CHIMEWAY_DATABASE_URL``, else the embedded server."""
    url = explicit or os.environ.get(ENV_DATABASE_URL)
    if url:
        return url
    return embedded.database_url(report)


def redact_url(url: str) -> str:
    """The connection string with any password replaced by ``***``, for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable database URL>"
    if params.get("password"):
        params["password"] = "***"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user")
    auth = f"{user}{':***' if params.get('password') else ''}@" if user else ""
    where = f"{host}:{port}" if not str(host).startswith("/") else f"[socket {host}]"
    return f"postgresql://{auth}{where}/{params.get('dbname') or ''}"


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> Conn:
    """Open a connection, or raise :class:`DatabaseUnavailable` naming the database."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {reason}") from exc


def with_dbname(url: str, dbname: str) -> str:
    """The same server, another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


T = TypeVar("T")


def dataclass_row(cls: type[T]) -> BaseRowFactory[T]:
    """Rows as ``cls`` (a dataclass), taking the columns it declares and ignoring others, so
    code keeps working while a migration adds a column (rolling deploys)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def factory(cursor: Any) -> RowMaker[T]:
        # Names straight from the result: cursor.description builds a Column object per
        # column per statement, which showed up in profiles of the deliver job.
        result = cursor.pgresult
        columns = [result.fname(i).decode() for i in range(result.nfields)] if result else []
        keep = [(i, name) for i, name in enumerate(columns) if name in names]

        def make(values: Sequence[Any]) -> T:
            return cls(**{name: values[i] for i, name in keep})

        return make

    return factory
