"""The Django app: label ``chimeway``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ChimewayConfig(AppConfig):
    name = "chimeway.contrib.django"
    label = "chimeway"
    verbose_name = "Chimeway"

    def ready(self) -> None:
        post_migrate.connect(_pin_fetch_plans, sender=self)


def _pin_fetch_plans(using: str = "default", **_: Any) -> None:
    """After every ``migrate``: a Procrastinate migration that replaced the job-fetch
    function dropped its custom plans; give them back (what ``chimeway migrate`` does)."""
    from chimeway import migrations
    from chimeway.contrib.django import connection

    conn = connection(using)
    if migrations.procrastinate_external(conn) or migrations.applied_migrations(conn):
        migrations.pin_fetch_plans(conn)
