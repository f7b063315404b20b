"""SQLAlchemy 2: join a ``Session``'s (or ``Connection``'s) transaction, sync or async.

The engine must use psycopg 3 (``postgresql+psycopg://``): Chimeway runs its statements on
the psycopg connection under SQLAlchemy's, inside the transaction SQLAlchemy has open, so
``session.commit()`` commits the app's rows, Chimeway's rows and the jobs together and
``session.rollback()`` leaves none of them::

    with Session(engine) as session, session.begin():
        session.add(Order(...))
        cw.trigger(OrderPlaced, params, tenant_id=..., idempotency_key=...,
                   conn=connection(session))

    async with AsyncSession(async_engine) as session, session.begin():
        session.add(Order(...))
        await cw.trigger_async(OrderPlaced, params, tenant_id=..., idempotency_key=...,
                               conn=await async_connection(session))

Needs ``pip install 'chimeway[sqlalchemy]'``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from chimeway.db import AsyncConn, Conn
from chimeway.errors import WrongConnection


def connection(bind: Session | Connection) -> Conn:
    """The psycopg ``Connection`` under ``bind`` (a ``Session`` or a ``Connection`` of a
    ``postgresql+psycopg`` engine), in the transaction SQLAlchemy has open on it: pass it
    as ``conn=`` to any Chimeway call."""
    if isinstance(bind, Session):
        sa_conn = bind.connection()
    elif isinstance(bind, Connection):
        sa_conn = bind
    else:
        raise WrongConnection(
            f"expected a SQLAlchemy Session or Connection, got {type(bind).__qualname__}"
            + (": use async_connection() for async ones" if _is_async(bind) else "")
        )
    driver = sa_conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise _not_psycopg(driver)
    return driver


async def async_connection(bind: AsyncSession | AsyncConnection) -> AsyncConn:
    """The psycopg ``AsyncConnection`` under ``bind`` (an ``AsyncSession`` or an
    ``AsyncConnection`` of a ``postgresql+psycopg`` engine), in its open transaction: pass
    it as ``conn=`` to the ``*_async`` methods."""
    if isinstance(bind, AsyncSession):
        sa_conn = await bind.connection()
    elif isinstance(bind, AsyncConnection):
        sa_conn = bind
    else:
        raise WrongConnection(
            f"expected a SQLAlchemy AsyncSession or AsyncConnection, got "
            f"{type(bind).__qualname__}: use connection() for sync ones"
        )
    driver = (await sa_conn.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise _not_psycopg(driver)
    return driver


def _is_async(bind: object) -> bool:
    return isinstance(bind, AsyncSession | AsyncConnection)


def _not_psycopg(driver: Any) -> WrongConnection:
    return WrongConnection(
        f"the SQLAlchemy engine's driver connection is a {type(driver).__module__}."
        f"{type(driver).__qualname__}; Chimeway joins psycopg 3 only: create the engine "
        "with a postgresql+psycopg:// URL"
    )
