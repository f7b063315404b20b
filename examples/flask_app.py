"""A Flask app that triggers notifications in its own psycopg transactions.

``POST /orders`` writes an order and triggers ``order_placed`` on the same pooled
connection, in one transaction: a request that fails after the trigger (``"fail": true``)
rolls back the order, Chimeway's rows and the delivery job together.

    CHIMEWAY_DATABASE_URL=postgresql://... chimeway migrate
    CHIMEWAY_DATABASE_URL=postgresql://... flask --app examples.flask_app run
    CHIMEWAY_DATABASE_URL=postgresql://... chimeway worker --app examples.flask_app:cw
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, request
from psycopg_pool import ConnectionPool

from chimeway import Adapter, Chimeway, LoggerAdapter, Notifier, Recipient

TENANT = "acme"


class OrderPlaced(Notifier):
    key = "order_placed"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["customer"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"order_id": params["order_id"]}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return ["in_app"]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return {
            "headline": f"Order {params['order_id']} placed",
            "body": "Thank you!",
            "primary_action": {"label": "View", "url": f"/orders/{params['order_id']}"},
        }


def create_app(
    database_url: str, adapters: Mapping[str, Adapter] | None = None
) -> tuple[Flask, Chimeway, ConnectionPool[Any]]:
    cw = Chimeway(database_url, notifiers=[OrderPlaced], adapters=adapters or {"in_app": LoggerAdapter()})
    # The app's own pool; `cw.pool` would do as well.
    pool: ConnectionPool[Any] = ConnectionPool(database_url, min_size=1, max_size=4, open=True)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, customer text, total int)")
    app = Flask(__name__)

    @app.post("/orders")
    def place_order() -> dict[str, Any]:
        order = request.get_json()
        # The pool's block commits when it ends, and rolls back if anything raises in it.
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO orders (id, customer, total) VALUES (%s, %s, %s)",
                (order["id"], order["customer"], order["total"]),
            )
            result = cw.trigger(
                OrderPlaced,
                {"order_id": order["id"], "customer": order["customer"]},
                tenant_id=TENANT,
                idempotency_key=f"order-{order['id']}",
                conn=conn,
            )
            if order.get("fail"):
                abort(409, "payment declined")
        return {"order": order["id"], "event_id": str(result.event_id)}

    return app, cw, pool


if "CHIMEWAY_DATABASE_URL" in os.environ:
    app, cw, _pool = create_app(os.environ["CHIMEWAY_DATABASE_URL"])
