"""Where the database is, how to connect, and the named queries the store runs.

Queries live in ``chimeway/sql/queries/*.sql`` under ``-- name: <noun_verb>`` headers and are
loaded once. The store (``chimeway/store/``, the only code that runs SQL) refers to them by
name through :func:`query`; Python never assembles SQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import BaseRowFactory, RowMaker

from chimeway import embedded
from chimeway.config import ENV_DATABASE_URL
from chimeway.errors import DatabaseUnavailable, WrongConnection

#: A synchronous psycopg connection, as every store function takes it.
Conn = psycopg.Connection[Any]
#: An asynchronous psycopg connection, as the ``*_async`` methods take it.
AsyncConn = psycopg.AsyncConnection[Any]

_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$", re.MULTILINE)


#: psycopg converts a query's ``%(name)s`` placeholders once and caches the result only for
#: a query of at most this many characters (``psycopg._queries``); a longer one is converted
#: on every call (0.5 ms of the client's CPU for 6 KB).
PSYCOPG_CACHED_LENGTH = 4096


def compact(name: str, sql: str) -> str:
    """The text sent for query ``name``: its name as a comment (what ``pg_stat_activity`` and
    the server's log show), then its lines without indentation, blank lines and lines that
    are only a comment; what the file explains stays in the file. No quoted string of a
    query spans lines (tests/unit/test_db.py), so none is changed; a query with a
    dollar-quoted body (a ``DO`` block) is sent as it is written."""
    if "$$" in sql:
        return f"-- chimeway: {name}\n{sql}"
    lines = (line.strip() for line in sql.splitlines())
    return "\n".join([f"-- chimeway: {name}"] + [x for x in lines if x and not x.startswith("--")])


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
def sources() -> dict[str, str]:
    """Every named query as its file has it, by name."""
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


@cache
def queries() -> dict[str, str]:
    """Every named query as it is sent (:func:`compact`), by name."""
    return {name: compact(name, sql) for name, sql in sources().items()}


def query(name: str, without: Iterable[str] = ()) -> LiteralString:
    """The SQL of the named query; the files are ours, so it is as trusted as a literal.

    ``without``: the query with those of its optional parts left out. A part is the lines
    between ``-- optional: <part>`` and ``-- end: <part>`` (comment lines of their own); a
    statement whose call does not need a part (a join, a CTE) is cheaper to run without it,
    where a parameter that switches it off still has every relation opened and locked.
    An unknown part raises ``KeyError``."""
    left_out = frozenset(without)
    return _variant(name, left_out) if left_out else queries()[name]


_OPTIONAL = re.compile(
    r"^[ \t]*--[ \t]*optional:[ \t]*([a-z_]+)[ \t]*\n(.*?)^[ \t]*--[ \t]*end:[ \t]*\1[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def optional_parts(name: str) -> frozenset[str]:
    """The optional parts of the named query (see :func:`query`)."""
    return frozenset(m.group(1) for m in _OPTIONAL.finditer(sources()[name]))


@cache
def _variant(name: str, left_out: frozenset[str]) -> str:
    unknown = left_out - optional_parts(name)
    if unknown:
        raise KeyError(f"query {name!r} has no optional part {', '.join(sorted(unknown))}")
    kept = _OPTIONAL.sub(lambda m: "" if m.group(1) in left_out else m.group(2), sources()[name])
    return compact(name, kept)


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


# -- the one seam between async callers and the sync engine --------------------------------


def check_sync(conn: object) -> None:
    """Refuse, with :class:`WrongConnection`, a ``conn=`` that is not a psycopg
    ``Connection``, saying what to pass instead."""
    if not isinstance(conn, psycopg.Connection):
        raise WrongConnection(f"conn= takes a psycopg Connection; got {_kind(conn)}")


def check_async(conn: object) -> None:
    """Refuse, with :class:`WrongConnection`, a ``conn=`` of an ``*_async`` method that is
    not a psycopg ``AsyncConnection``."""
    if not isinstance(conn, psycopg.AsyncConnection):
        raise WrongConnection(
            f"conn= of an *_async method takes a psycopg AsyncConnection; got {_kind(conn)}"
        )


def _kind(conn: object) -> str:
    name = f"{type(conn).__module__}.{type(conn).__qualname__}"
    root = type(conn).__module__.split(".")[0]
    if isinstance(conn, psycopg.AsyncConnection):
        return f"{name}: call the *_async method instead"
    if isinstance(conn, psycopg.Connection):
        return f"{name}: call the method without _async instead"
    if root == "sqlalchemy":
        return (
            f"{name}: pass chimeway.contrib.sqlalchemy.connection(session) (or "
            "`await chimeway.contrib.sqlalchemy.async_connection(session)` for *_async)"
        )
    if root == "django":
        return f"{name}: pass chimeway.contrib.django.connection()"
    if root == "psycopg2":
        return f"{name}: Chimeway needs psycopg 3 (psycopg2 cannot join)"
    return name


async def joined(aconn: AsyncConn | None, work: Callable[[Conn | None], T]) -> T:
    """Run the sync ``work`` for an async caller, in a thread, so the event loop goes on.

    With ``aconn``, ``work`` gets a sync psycopg ``Connection`` over the same libpq
    connection: the same session and the same open transaction, which stays the caller's
    to commit or roll back. So the engine is written once, synchronously (design §2), and
    still joins an ``AsyncConnection`` (a SQLAlchemy ``AsyncSession``'s too). The caller's
    connection lock is held meanwhile: nothing else runs on it. Without ``aconn``, ``work``
    gets ``None`` and takes a pool connection of its own.
    """
    if aconn is None:
        return await asyncio.to_thread(work, None)
    check_async(aconn)
    if aconn.closed:
        raise WrongConnection("conn= is closed")
    async with aconn.lock:
        if aconn._pipeline is not None:
            raise WrongConnection("conn= is in pipeline mode; call Chimeway outside the pipeline")
        return await asyncio.to_thread(_on_borrowed, aconn, work)


def _on_borrowed(aconn: AsyncConn, work: Callable[[Conn | None], T]) -> T:
    return work(borrow(aconn))


class _Borrowed(psycopg.Connection[Any]):
    """A psycopg ``Connection`` over another connection's libpq connection (see
    :func:`borrow`): the owner's transaction settings, read live; default adapters."""

    _owner: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]

    # psycopg reads these private attributes when it begins a transaction: the owner's
    # current values, so a borrowed connection kept across Django's autocommit switches
    # (atomic blocks) never begins or commits a transaction the owner has open.
    @property
    def _autocommit(self) -> bool:
        return bool(self._owner._autocommit)

    @_autocommit.setter
    def _autocommit(self, value: bool) -> None:
        pass  # the owner's setting decides

    @property
    def _isolation_level(self) -> Any:
        return self._owner._isolation_level

    @_isolation_level.setter
    def _isolation_level(self, value: Any) -> None:
        pass

    @property
    def _read_only(self) -> bool | None:
        return self._owner._read_only

    @_read_only.setter
    def _read_only(self, value: bool | None) -> None:
        pass

    @property
    def _deferrable(self) -> bool | None:
        return self._owner._deferrable

    @_deferrable.setter
    def _deferrable(self, value: bool | None) -> None:
        pass

    def _get_tx_start_command(self) -> bytes:
        self._begin_statement = b""  # never cached: built from the owner's settings
        return super()._get_tx_start_command()


def borrow(owner: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> Conn:
    """A sync psycopg ``Connection`` over ``owner``'s libpq connection: the same session,
    the same open transaction, with psycopg's default adapters (a framework may load
    ``jsonb`` as text on its own connection: Django does) and no prepared statements (their
    names are per psycopg object: the two would clash). It is never closed by Chimeway;
    notices and notifications stay the owner's."""
    pgconn = owner.pgconn
    handlers = (pgconn.notice_handler, pgconn.notify_handler)
    conn = _Borrowed(pgconn)
    pgconn.notice_handler, pgconn.notify_handler = handlers
    conn._owner = owner
    # Not ours to close: psycopg does not warn about a pooled connection left open.
    conn._pool = None
    conn.prepare_threshold = None
    return conn
