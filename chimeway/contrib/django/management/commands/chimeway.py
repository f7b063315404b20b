"""``manage.py chimeway <command> [options]``: the ``chimeway`` CLI on the project's
database (``--database`` picks another alias); ``CHIMEWAY_APP`` in settings names your
Chimeway (``"shop.notifications:cw"``) for the commands that take ``--app``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from chimeway.cli import cli
from chimeway.contrib.django import database_url


class Command(BaseCommand):
    help = "Run a chimeway command (migrate, worker, explain, ...) on this project's database."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--database", default="default", help="The Django database alias.")
        parser.add_argument("command", nargs=argparse.REMAINDER, help="chimeway's arguments")

    def handle(self, *args: Any, **options: Any) -> None:
        app = getattr(settings, "CHIMEWAY_APP", None)
        if app and "CHIMEWAY_APP" not in os.environ:
            os.environ["CHIMEWAY_APP"] = app
        cli.main(
            args=["--database-url", database_url(options["database"]), *options["command"]],
            prog_name="manage.py chimeway",
            auto_envvar_prefix="CHIMEWAY",
        )
