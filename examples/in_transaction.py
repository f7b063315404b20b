"""Trigger a notification inside the application's own transaction.

The app writes an order and triggers "order placed" on the same psycopg connection, in the
same open transaction: the way a Django or SQLAlchemy app hands Chimeway the connection it is
already using. If the app rolls back, nothing of Chimeway remains (no event, no delivery, no
job); if it commits, the order, the delivery and its job appear together.

    CHIMEWAY_DATABASE_URL=postgresql://... python examples/in_transaction.py

The database must be migrated (``chimeway migrate``); the example creates an ``orders`` table
for itself if there is none.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import psycopg

from chimeway import Chimeway, LoggerAdapter, NotFound, Notifier, Recipient, Triggered
from chimeway.testing import drain, due_jobs

TENANT = "acme"


class OrderPlaced(Notifier):
    key = "order_placed"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient]:
        return [Recipient(id=params["customer_id"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {"order_id": params["order_id"]}

    def channels(self, params: dict[str, Any], recipient: Recipient) -> list[str]:
        return ["email"]

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        text = f"We received your order {params['order_id']}."
        return {"subject": "Order received", "html_body": f"<p>{text}</p>", "text_body": text}


def place_order(cw: Chimeway, conn: psycopg.Connection[Any], customer_id: str) -> Triggered:
    """The app's unit of work: its own row and the notification, in one transaction."""
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    conn.execute("INSERT INTO orders (id, customer_id) VALUES (%s, %s)", (order_id, customer_id))
    result = cw.trigger(
        OrderPlaced,
        {"order_id": order_id, "customer_id": customer_id},
        tenant_id=TENANT,
        idempotency_key=f"order-placed-{order_id}",
        conn=conn,  # join this transaction instead of committing one of its own
    )
    assert isinstance(result, Triggered)
    return result


def orders_of(conn: psycopg.Connection[Any], customer_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (customer_id,))
    found = row.fetchone()
    conn.commit()  # end this read's transaction
    return int(found[0]) if found else 0


def delivery_jobs(cw: Chimeway) -> int:
    return due_jobs(cw, queues=["chimeway_delivery"])


def main() -> int:
    url = os.environ.get("CHIMEWAY_DATABASE_URL")
    if not url:
        print("set CHIMEWAY_DATABASE_URL to a migrated database", file=sys.stderr)
        return 2
    # Email is logged here (LoggerAdapter sends nothing); a real app passes SmtpAdapter(...).
    adapters = {"email": LoggerAdapter()}
    with (
        Chimeway(url, notifiers=[OrderPlaced], adapters=adapters) as cw,
        psycopg.connect(url) as conn,
    ):
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, customer_id text)")
        conn.commit()
        jobs_before = delivery_jobs(cw)

        # 1. The app fails after triggering and rolls back: Chimeway's writes go with it.
        rolled_back = place_order(cw, conn, "ada")
        conn.rollback()
        delivery_id = rolled_back.delivery_ids[0]
        try:
            cw.delivery(TENANT, delivery_id)
            print("rollback: the delivery survived (unexpected)")
            return 1
        except NotFound:
            pass
        print(
            f"rollback: orders for ada {orders_of(conn, 'ada')}, "
            f"delivery {delivery_id} not found, new jobs {delivery_jobs(cw) - jobs_before}"
        )

        # 2. The app commits: the order, the delivery and its job land together.
        committed = place_order(cw, conn, "grace")
        visible = delivery_jobs(cw) - jobs_before  # seen from another connection
        print(f"before commit: new jobs visible to workers {visible}")
        conn.commit()
        delivery = cw.delivery(TENANT, committed.delivery_ids[0])
        print(
            f"commit: orders for grace {orders_of(conn, 'grace')}, "
            f"delivery {delivery.id} {delivery.status}, new jobs {delivery_jobs(cw) - jobs_before}"
        )

        drain(cw)  # what a worker would do: send it (through the LoggerAdapter here)
        print(f"sent: {cw.explain_delivery(TENANT, delivery.id).why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
