"""A FastAPI + SQLAlchemy 2 app that triggers notifications in its own transactions.

``POST /orders`` (a sync route on a ``Session``) and ``POST /async/orders`` (an async route
on an ``AsyncSession``) write an order and trigger ``order_placed`` in the same
transaction: a request that fails after the trigger (``"fail": true``) rolls back the
order, Chimeway's rows and the delivery job together. The schema, Chimeway's included,
comes from Alembic (``migrations/``, ``alembic upgrade head``).

    CHIMEWAY_DATABASE_URL=postgresql://... alembic -c examples/fastapi_sqlalchemy/alembic.ini upgrade head
    CHIMEWAY_DATABASE_URL=postgresql://... uvicorn examples.fastapi_sqlalchemy.app:app
    CHIMEWAY_DATABASE_URL=postgresql://... chimeway worker --app examples.fastapi_sqlalchemy.app:cw
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from chimeway import Adapter, Chimeway, LoggerAdapter, Notifier, Recipient
from chimeway.contrib.sqlalchemy import async_connection, connection

TENANT = "acme"


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(primary_key=True)
    customer: Mapped[str]
    total: Mapped[int]


class OrderPlaced(Notifier):
    key = "order_placed"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["customer"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"order_id": params["order_id"]}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return ["in_app"]

    def render(
        self, params: dict[str, Any], recipient: Recipient, channel: str
    ) -> dict[str, Any]:
        return {
            "headline": f"Order {params['order_id']} placed",
            "body": "Thank you!",
            "primary_action": {"label": "View", "url": f"/orders/{params['order_id']}"},
        }


class OrderIn(BaseModel):
    id: str
    customer: str
    total: int
    fail: bool = False


def sqlalchemy_url(database_url: str) -> str:
    """SQLAlchemy's URL for psycopg 3, the driver Chimeway joins."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise SystemExit("CHIMEWAY_DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def create_app(
    database_url: str, adapters: Mapping[str, Adapter] | None = None
) -> tuple[FastAPI, Chimeway]:
    cw = Chimeway(
        database_url,
        notifiers=[OrderPlaced],
        adapters=adapters or {"in_app": LoggerAdapter()},
    )
    engine = create_engine(sqlalchemy_url(database_url))
    async_engine = create_async_engine(sqlalchemy_url(database_url))
    sessions = sessionmaker(engine)
    async_sessions = async_sessionmaker(async_engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await async_engine.dispose()
        engine.dispose()
        cw.close()

    app = FastAPI(lifespan=lifespan)

    def session() -> Iterator[Session]:
        with sessions() as s:
            yield s

    async def async_session() -> AsyncIterator[AsyncSession]:
        async with async_sessions() as s:
            yield s

    @app.post("/orders")
    def place_order(order: OrderIn, s: Session = Depends(session)) -> dict[str, Any]:  # noqa: B008
        with s.begin():  # commits on success, rolls back on any error
            s.add(Order(id=order.id, customer=order.customer, total=order.total))
            result = cw.trigger(
                OrderPlaced,
                {"order_id": order.id, "customer": order.customer},
                tenant_id=TENANT,
                idempotency_key=f"order-{order.id}",
                conn=connection(s),
            )
            if order.fail:
                raise HTTPException(409, "payment declined")
        return {"order": order.id, "event_id": str(result.event_id)}

    @app.post("/async/orders")
    async def place_order_async(
        order: OrderIn,
        s: AsyncSession = Depends(async_session),  # noqa: B008
    ) -> dict[str, Any]:
        async with s.begin():
            s.add(Order(id=order.id, customer=order.customer, total=order.total))
            result = await cw.trigger_async(
                OrderPlaced,
                {"order_id": order.id, "customer": order.customer},
                tenant_id=TENANT,
                idempotency_key=f"order-{order.id}",
                conn=await async_connection(s),
            )
            if order.fail:
                raise HTTPException(409, "payment declined")
        return {"order": order.id, "event_id": str(result.event_id)}

    return app, cw


if "CHIMEWAY_DATABASE_URL" in os.environ:
    app, cw = create_app(os.environ["CHIMEWAY_DATABASE_URL"])
