"""Test database for the suite: one PostgreSQL server per session, migrated once into a
template database; each test gets a fresh clone (``committed_db``) or a connection inside a
transaction that is rolled back (``db``).

Which server, first match wins (design §9):
  1. ``CHIMEWAY_TEST_DATABASE_URL``          -> that server                      ("dsn")
  2. a server answering on 127.0.0.1:5432     -> that server, as user postgres    ("local")
  3. ``pg_ctl`` found and not root            -> pytest-postgresql starts its own ("proc")
  4. otherwise                                -> the embedded server (extra)      ("embedded")
``CHIMEWAY_TEST_BACKEND=dsn|local|proc|embedded`` forces a choice.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from chimeway import embedded, migrations

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Per process, so that two test runs on one server never drop each other's databases.
PREFIX = "chimeway_tests_"
DBNAME = f"{PREFIX}{os.getpid()}"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run(
            [pg_config, "--bindir"], check=False, capture_output=True, text=True
        ).stdout
        candidate = Path(bindir.strip()) / "pg_ctl"
        if candidate.exists():
            return str(candidate)
    return None


def _backend() -> str:
    forced = os.environ.get("CHIMEWAY_TEST_BACKEND")
    if forced:
        return forced
    if os.environ.get("CHIMEWAY_TEST_DATABASE_URL"):
        return "dsn"
    if _answers(LOCAL_URL):
        return "local"
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0  # postgres refuses to run as root
    if _pg_ctl() and not is_root:
        return "proc"
    return "embedded"


def load_chimeway(
    host: str, port: int, user: str, dbname: str, password: str | None = None, **_: Any
) -> None:
    """Migrate the template database through the real runner."""
    migrations.migrate(
        make_conninfo("", host=host, port=port, user=user, dbname=dbname, password=password)
    )


BACKEND = _backend()
LOAD = [load_chimeway]

if BACKEND in ("dsn", "local"):
    _p = conninfo_to_dict(os.environ.get("CHIMEWAY_TEST_DATABASE_URL") or LOCAL_URL)
    pg_server = factories.postgresql_noproc(
        host=str(_p.get("host") or "127.0.0.1"),
        port=int(_p.get("port") or 5432),
        user=str(_p.get("user") or "postgres"),
        password=_p.get("password"),  # type: ignore[arg-type]
        dbname=DBNAME,
        load=LOAD,
    )
elif BACKEND == "proc":
    pg_server = factories.postgresql_proc(executable=_pg_ctl(), port=None, dbname=DBNAME, load=LOAD)
elif BACKEND == "embedded":

    @pytest.fixture(scope="session")
    def embedded_pg_server() -> SimpleNamespace:
        # A fixed per-user data dir: a killed run's server is found and reused, not duplicated.
        pgdata = Path(tempfile.gettempdir()) / f"chimeway-pytest-pgdata-{os.getuid()}"
        server = embedded.server(pgdata)
        drop_stale_databases(server.get_uri("postgres"))
        info = server.get_postmaster_info()
        return SimpleNamespace(
            host=str(info.socket_dir),
            port=info.port,
            user="postgres",
            password=None,
            options="",
            maintenance_dbname="postgres",
            template_dbname=None,
        )

    pg_server = factories.postgresql_noproc(
        depends_on="embedded_pg_server", dbname=DBNAME, load=LOAD
    )
else:
    raise RuntimeError(f"CHIMEWAY_TEST_BACKEND={BACKEND!r}: expected dsn, local, proc or embedded")


def drop_stale_databases(url: str) -> None:
    """Drop the test databases of runs that died (their process is gone)."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [PREFIX + "%"]
            )
        ]
        for name in names:
            # chimeway_tests_<pid>[gw<n>]_...: pytest-xdist's workers add their id.
            pid = re.match(r"\d*", name[len(PREFIX) :]).group()  # type: ignore[union-attr]
            if pid and int(pid) != os.getpid() and not _alive(int(pid)):
                # A run's template database must stop being one before it can be dropped.
                conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false'.encode())
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.option.postgresql_drop_test_database = True
    if BACKEND in ("dsn", "local"):
        drop_stale_databases(os.environ.get("CHIMEWAY_TEST_DATABASE_URL") or LOCAL_URL)


def pytest_report_header(config: pytest.Config) -> str:
    return f"chimeway test database backend: {BACKEND}"


#: How many clones are kept made ahead of the tests that will take them.
AHEAD = int(os.environ.get("CHIMEWAY_TEST_CLONES_AHEAD", "6"))


class Databases:
    """Creates databases on the test server, empty or cloned from the migrated template.

    Cloning (``CREATE DATABASE ... TEMPLATE``) and dropping cost a test a quarter of a
    second on a quiet machine and over a second on a loaded one. One background thread with
    its own admin connection does both off the tests' path: it keeps :data:`AHEAD` clones
    made ahead (filled while the long tests, the worker processes and servers, run; drawn on
    by a run of short tests, each of which would otherwise wait for its own clone), and a
    finished test's database is dropped (``WITH (FORCE)``: its leftover sessions are ended)
    while the next one runs. Each test still gets a database that no other test has
    touched."""

    def __init__(self, server: Any, ahead: int = AHEAD) -> None:
        self.server = server
        self.ahead = max(1, ahead)
        self._admin: psycopg.Connection[Any] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-databases")
        self._ready: deque[Future[str]] = deque()
        self._drops: list[Future[None]] = []

    def url(self, dbname: str) -> str:
        s = self.server
        return make_conninfo(
            "", host=s.host, port=s.port, user=s.user, password=s.password or None, dbname=dbname
        )

    def janitor(self, dbname: str, *, template: bool = True) -> DatabaseJanitor:
        s = self.server
        return DatabaseJanitor(
            user=s.user,
            host=s.host,
            port=s.port,
            password=s.password or None,
            dbname=dbname,
            template_dbname=s.template_dbname if template else None,
            maintenance_dbname=s.maintenance_dbname,
        )

    def _execute(self, statement: sql.Composable) -> None:
        """Run one statement on the admin connection (in the background thread only)."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(self.url(self.server.maintenance_dbname), autocommit=True)
        self._admin.execute(statement)

    def _clone(self) -> str:
        name = f"{DBNAME}_{uuid.uuid4().hex[:10]}"
        self._execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self.server.template_dbname)
            )
        )
        return name

    def _drop(self, name: str) -> None:
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def create(self, *, template: bool = True, ahead: bool = True) -> Iterator[str]:
        """A fresh database for one user; with ``ahead``, the clones of the next ones are
        made meanwhile (the session's shared database asks for none: a run of rolled-back
        tests alone makes no clone it does not use)."""
        if not template or not self.server.template_dbname:
            name = f"{DBNAME}_{uuid.uuid4().hex[:10]}"
            with self.janitor(name, template=template):
                yield self.url(name)
            return
        made = self._ready.popleft() if self._ready else self._thread.submit(self._clone)
        # The next tests' clones, made meanwhile (queued behind the drops already asked for).
        while ahead and len(self._ready) < self.ahead:
            self._ready.append(self._thread.submit(self._clone))
        name = made.result()
        try:
            yield self.url(name)
        finally:
            self._drops.append(self._thread.submit(self._drop, name))

    def close(self) -> None:
        """Drop the clones made ahead (those not started are not made), wait for every
        drop, and report one that failed."""
        while self._ready:
            made = self._ready.popleft()
            if made.cancel():
                continue
            try:
                name = made.result()
            except psycopg.Error:
                continue
            self._drops.append(self._thread.submit(self._drop, name))
        self._thread.shutdown(wait=True)
        if self._admin is not None:
            self._admin.close()
        for dropped in self._drops:
            dropped.result()


@pytest.fixture(scope="session")
def databases(pg_server: Any) -> Iterator[Databases]:
    made = Databases(pg_server)
    yield made
    made.close()


@pytest.fixture
def committed_db(databases: Databases) -> Iterator[str]:
    """URL of a fresh, migrated database for this test alone (commits, LISTEN, workers)."""
    yield from databases.create()


@pytest.fixture
def empty_db(databases: Databases) -> Iterator[str]:
    """URL of a fresh database with nothing in it."""
    yield from databases.create(template=False)


@pytest.fixture(scope="session")
def shared_db(databases: Databases) -> Iterator[str]:
    yield from databases.create(ahead=False)


#: Tables a test in a rolled-back transaction must leave empty on the shared database.
SHARED_TABLES = (
    "chimeway_events",
    "chimeway_deliveries",
    "chimeway_workflow_runs",
    "chimeway_workflow_definitions",
    "chimeway_signals",
    "procrastinate_jobs",
)


COMMITTED_ROWS = (
    "SELECT " + ", ".join(f"(SELECT count(*) FROM {table})" for table in SHARED_TABLES)
).encode()


class CommittedRows:
    """Counts the rows committed to the shared tables, on a connection of its own
    (autocommit: each count sees what is committed at that moment), kept for the session
    and made again if a test ended it: one round trip per check."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection[Any] | None = None

    def __call__(self) -> dict[str, int]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(self.url, autocommit=True)
        row = self.conn.execute(COMMITTED_ROWS).fetchone()
        assert row is not None
        return {table: n for table, n in zip(SHARED_TABLES, row, strict=True) if n}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@pytest.fixture(scope="session")
def committed_rows(shared_db: str) -> Iterator[CommittedRows]:
    check = CommittedRows(shared_db)
    yield check
    check.close()


@pytest.fixture
def db(shared_db: str, committed_rows: CommittedRows) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a migrated database inside a transaction that is rolled back.

    The transaction is open from the start, so the engine's savepoints stay savepoints (on
    an idle connection psycopg's ``transaction()`` would begin and commit one of its own);
    after the test, another connection checks that nothing was committed."""
    with psycopg.connect(shared_db) as conn, conn.transaction(force_rollback=True):
        yield conn
    committed = committed_rows()
    assert committed == {}, f"a rolled-back test committed rows: {committed}"
