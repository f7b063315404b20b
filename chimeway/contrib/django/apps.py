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
        post_migrate.connect(_after_migrate, sender=self)


def _after_migrate(using: str = "default", verbosity: int = 1, **_: Any) -> None:
    """After every ``migrate``, once Chimeway's Django migration has created its schema:
    apply the Chimeway migrations a newer Chimeway brought (so upgrading Chimeway needs no
    new Django migration), and give Procrastinate's job fetch its custom plans again (a
    Procrastinate migration that replaced the function dropped them), as ``chimeway
    migrate`` does."""
    from chimeway import migrations
    from chimeway.contrib.django import connection

    conn = connection(using)
    if not migrations.applied_migrations(conn):
        return  # Chimeway's Django migration has not run (yet): nothing of ours here
    notes: list[str] = []
    result = migrations.migrate_on(conn, report=notes.append)
    if verbosity >= 1 and result.applied:
        for note in notes:
            print(f"  Chimeway: {note}")
