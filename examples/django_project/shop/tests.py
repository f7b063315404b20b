"""Django's own tests: the test database gets Chimeway's tables from the migrations, and
each TestCase's transaction holds the app's rows, Chimeway's and the jobs."""

from __future__ import annotations

from django.db import transaction
from django.test import TestCase, TransactionTestCase

from chimeway.contrib.django import connection
from chimeway.testing import drain
from shop.models import Order
from shop.notifications import get_cw
from shop.orders import PaymentDeclined, place_order


def count(table: str) -> int:
    row = connection().execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    return int(row[0]) if row else -1


class PlaceOrderTest(TestCase):
    def test_the_order_its_notification_and_job_commit_together(self) -> None:
        order = place_order("ada", 42)
        self.assertEqual(count("chimeway_events"), 1)
        self.assertEqual(count("procrastinate_jobs"), 1)
        # The job, run in this test's transaction: the in-app item reaches the inbox.
        drain(get_cw(), conn=connection())
        page = get_cw().inbox.list("shop", "ada", conn=connection())
        self.assertEqual([i.content["headline"] for i in page.items], [f"Order {order.pk} placed"])

    def test_a_declined_payment_rolls_everything_back(self) -> None:
        with self.assertRaises(PaymentDeclined):
            place_order("grace", 7, decline=True)
        self.assertEqual(Order.objects.count(), 0)
        self.assertEqual(count("chimeway_events"), 0)
        self.assertEqual(count("procrastinate_jobs"), 0)


class CommittedOrderTest(TransactionTestCase):
    def test_a_committed_order_is_delivered_by_the_worker(self) -> None:
        place_order("linus", 3)
        self.assertFalse(transaction.get_connection().in_atomic_block)
        drain(get_cw())  # Procrastinate's worker, on committed rows
        with get_cw().pool.connection() as conn:
            row = conn.execute(
                "SELECT status FROM chimeway_deliveries d JOIN chimeway_notifications n "
                "ON n.id = d.notification_id WHERE n.recipient_id = 'linus'"
            ).fetchone()
        self.assertEqual(row, ("succeeded",))


def tearDownModule() -> None:
    # Chimeway's pool holds connections to the test database, which Django drops next.
    get_cw().close()
    get_cw.cache_clear()
