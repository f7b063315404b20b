"""SQLAlchemy 2 (sync and async sessions) and Alembic, on a real psycopg 3 engine: Chimeway
joins the session's transaction, and Alembic applies Chimeway's migrations in its history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from chimeway import Chimeway, MigrationError, Triggered, WrongConnection, migrations
from chimeway.contrib.sqlalchemy import async_connection, connection
from chimeway.testing import RecordingAdapter, drain
from examples.fastapi_sqlalchemy.app import create_app
from tests.integration.conftest import Recorders, Uvicorns, count
from tests.integration.framework_support import (
    NOTHING,
    PARAMS,
    assert_committed_and_delivered,
    assert_rolled_back,
    create_app_table,
    rows,
)
from tests.integration.notifiers import Welcome

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fastapi_sqlalchemy"


def url_of(conninfo: str) -> str:
    """A postgresql:// URL for a test database's conninfo."""
    p = conninfo_to_dict(conninfo)
    auth = f"{p['user']}:{p['password']}" if p.get("password") else str(p["user"])
    return f"postgresql://{auth}@{p['host']}:{p['port']}/{p['dbname']}"


def sa_url(conninfo: str) -> str:
    return url_of(conninfo).replace("postgresql://", "postgresql+psycopg://", 1)


def test_a_session_commits_its_row_chimeways_and_the_job_together(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    create_app_table(committed_db)
    engine = create_engine(sa_url(committed_db))
    try:
        with Session(engine) as session, session.begin():
            session.execute(text("INSERT INTO app_orders VALUES ('o1', 42)"))
            result = cw.trigger(
                Welcome, PARAMS, tenant_id="t1", idempotency_key="k1", conn=connection(session)
            )
            assert rows(committed_db) == NOTHING
    finally:
        engine.dispose()
    assert_committed_and_delivered(cw, committed_db, result, adapters["in_app"])


def test_a_session_rollback_leaves_nothing(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    create_app_table(committed_db)
    engine = create_engine(sa_url(committed_db))
    try:
        with engine.connect() as conn:  # a Connection works as well as a Session
            conn.execute(text("INSERT INTO app_orders VALUES ('o1', 42)"))
            result = cw.trigger(
                Welcome, PARAMS, tenant_id="t1", idempotency_key="k1", conn=connection(conn)
            )
            assert isinstance(result, Triggered)
            conn.rollback()
    finally:
        engine.dispose()
    drain(cw)
    assert_rolled_back(committed_db, adapters["in_app"])


def test_an_async_session_commits_and_rolls_back_with_chimeway(
    cw: Chimeway, committed_db: str, adapters: Recorders
) -> None:
    create_app_table(committed_db)

    async def main() -> Triggered | Any:
        engine = create_async_engine(sa_url(committed_db))
        try:
            async with AsyncSession(engine) as session:
                async with session.begin():
                    await session.execute(text("INSERT INTO app_orders VALUES ('o0', 1)"))
                    await cw.trigger_async(
                        Welcome,
                        PARAMS,
                        tenant_id="t1",
                        idempotency_key="k0",
                        conn=await async_connection(session),
                    )
                    await session.rollback()
                assert rows(committed_db) == NOTHING
                async with session.begin():
                    await session.execute(text("INSERT INTO app_orders VALUES ('o1', 42)"))
                    return await cw.trigger_async(
                        Welcome,
                        PARAMS,
                        tenant_id="t1",
                        idempotency_key="k1",
                        conn=await async_connection(session),
                    )
        finally:
            await engine.dispose()

    result = asyncio.run(main())
    assert_committed_and_delivered(cw, committed_db, result, adapters["in_app"])


def test_the_wrong_kind_of_sqlalchemy_object_is_refused(committed_db: str) -> None:
    with pytest.raises(WrongConnection, match="got str"):
        connection("postgresql://")  # type: ignore[arg-type]

    async def main() -> None:
        engine = create_async_engine(sa_url(committed_db))
        try:
            async with AsyncSession(engine) as session:
                with pytest.raises(WrongConnection, match="use async_connection"):
                    connection(session)  # type: ignore[arg-type]
                sync = Session(create_engine(sa_url(committed_db)))
                with pytest.raises(WrongConnection, match="use connection\\(\\) for sync"):
                    await async_connection(sync)  # type: ignore[arg-type]
                sync.close()
        finally:
            await engine.dispose()

    asyncio.run(main())


# -- Alembic and the FastAPI example -------------------------------------------------------


def alembic_config(url: str) -> Config:
    config = Config(str(EXAMPLE / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url_of(url))
    return config


def test_alembic_applies_chimeways_migrations_in_the_apps_history(
    committed_db: str, empty_db: str
) -> None:
    command.upgrade(alembic_config(empty_db), "head")
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("0002_chimeway",)
        ]
        assert conn.execute("SELECT to_regclass('orders') IS NOT NULL").fetchone() == (True,)
        assert all(s.state == "applied" for s in migrations.status(conn))
        # The same schema as `chimeway migrate`, with the app's tables beside it.
        conn.execute("DROP TABLE orders, alembic_version")
        conn.commit()
        assert migrations.describe_schema(conn) == describe(committed_db)
    assert migrations.migrate(empty_db).applied == []


def describe(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return migrations.describe_schema(conn)


def test_alembic_downgrade_of_chimeways_revision_is_refused(empty_db: str) -> None:
    config = alembic_config(empty_db)
    command.upgrade(config, "head")
    with pytest.raises(MigrationError, match="cannot be reverted"):
        command.downgrade(config, "0001_orders")
    assert count(empty_db, "SELECT count(*) FROM chimeway_migrations") > 0


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """A real uvicorn serving ``app`` (lifespan included) on a thread; its base URL."""
    servers = Uvicorns()
    try:
        yield servers.start(app, lifespan="on")
    finally:
        servers.stop()


def test_the_fastapi_example_sync_and_async_routes(empty_db: str) -> None:
    command.upgrade(alembic_config(empty_db), "head")
    recorder = RecordingAdapter()
    app, _cw = create_app(url_of(empty_db), adapters={"in_app": recorder})
    with serve(app) as base, httpx.Client(base_url=base) as client:
        for path in ("/orders", "/async/orders"):
            order = path.strip("/").replace("/", "-")
            failed = client.post(
                path, json={"id": f"{order}-x", "customer": "ada", "total": 1, "fail": True}
            )
            assert failed.status_code == 409
            placed = client.post(path, json={"id": order, "customer": "ada", "total": 42})
            assert placed.status_code == 200, placed.text
    # Only the committed orders and their notifications exist; the jobs send them.
    with psycopg.connect(empty_db) as conn:
        orders = conn.execute("SELECT id FROM orders ORDER BY id").fetchall()
    assert orders == [("async-orders",), ("orders",)]
    assert count(empty_db, "SELECT count(*) FROM chimeway_events") == 2
    assert count(empty_db, "SELECT count(*) FROM procrastinate_jobs") == 2
    # The app's lifespan closed its Chimeway; a worker's (here: drain's) sends the jobs.
    with Chimeway(url_of(empty_db), adapters={"in_app": recorder}) as worker_cw:
        drain(worker_cw)
    assert len(recorder.sent) == 2
    assert (
        count(empty_db, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'") == 2
    )
