"""Chimeway's schema (and Procrastinate's, unless ``procrastinate.contrib.django`` manages
it: then this runs after Procrastinate's batch-defer migration, whose function Chimeway
calls), applied in this migration's transaction by Chimeway's own runner, so
``chimeway migrate status`` agrees. Migrations of later Chimeway releases are applied at
the end of every ``migrate`` (the app's ``post_migrate``), once this one has run."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations

from chimeway import migrations as chimeway_migrations
from chimeway.contrib.django import connection

PROCRASTINATE = "procrastinate.contrib.django"


def apply(apps: Any, schema_editor: Any) -> None:
    conn = connection(schema_editor.connection.alias)
    chimeway_migrations.migrate_on(conn, require_fetch=False)


class Migration(migrations.Migration):
    dependencies = (
        [("procrastinate", "0038_post_batch_defer_jobs")]
        if PROCRASTINATE in settings.INSTALLED_APPS
        else []
    )
    operations = [migrations.RunPython(apply, migrations.RunPython.noop, elidable=False)]  # noqa: RUF012
