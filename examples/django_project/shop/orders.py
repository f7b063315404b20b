"""Placing an order: the order row, Chimeway's rows and the delivery job in one
``transaction.atomic()`` block."""

from __future__ import annotations

from django.db import transaction

from chimeway import Triggered
from chimeway.contrib.django import connection
from shop.models import Order
from shop.notifications import OrderPlaced, get_cw


class PaymentDeclined(Exception):
    pass


def place_order(customer: str, total: int, *, decline: bool = False) -> Order:
    with transaction.atomic():
        order = Order.objects.create(customer=customer, total=total)
        result = get_cw().trigger(
            OrderPlaced,
            {"order_id": order.pk, "customer": customer},
            tenant_id="shop",
            idempotency_key=f"order-{order.pk}",
            conn=connection(),
        )
        assert isinstance(result, Triggered)
        if decline:  # anything raised in the block rolls back all of it
            raise PaymentDeclined(customer)
    return order
