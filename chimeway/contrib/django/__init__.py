"""Django: Chimeway's schema through Django's migrations, ``manage.py chimeway <command>``,
and the connection of the open ``transaction.atomic()`` block for ``conn=``.

Add ``"chimeway.contrib.django"`` to ``INSTALLED_APPS`` (after
``"procrastinate.contrib.django"`` if you use it: Procrastinate's schema is then Django's,
and Chimeway applies only its own). ``manage.py migrate`` then applies Chimeway's
migrations, test databases included; ``manage.py chimeway worker`` (or any other
``chimeway`` command) runs on the project's database::

    from django.db import transaction
    from chimeway.contrib.django import connection

    with transaction.atomic():
        order = Order.objects.create(...)
        cw.trigger(OrderPlaced, params, tenant_id=..., idempotency_key=...,
                   conn=connection())

Needs Django 4.2+ on psycopg 3 (``pip install 'chimeway[django]'``).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from chimeway import db
from chimeway.db import Conn
from chimeway.errors import ConfigurationError, WrongConnection

#: Django's connection parameters that are connection-string keywords.
_CONNINFO_KEYS = (
    "dbname",
    "user",
    "password",
    "host",
    "port",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "service",
    "passfile",
    "connect_timeout",
)


def connection(using: str = "default") -> Conn:
    """The psycopg connection of Django's ``using`` database, opened if needed. Inside
    ``transaction.atomic()``, Chimeway joins that transaction (its rows and jobs commit or
    roll back with the block); outside one, a Chimeway call commits on its own, like
    Django's autocommit."""
    from django.db import connections

    wrapper = connections[using]
    if wrapper.vendor != "postgresql":
        raise ConfigurationError(f"Django database {using!r} is {wrapper.vendor}, not PostgreSQL")
    wrapper.ensure_connection()
    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise WrongConnection(
            f"Django database {using!r} uses {type(raw).__module__}; Chimeway joins "
            "psycopg 3 only: pip install 'psycopg[binary]' (Django prefers it to psycopg2)"
        )
    # Django loads jsonb as text on its own connection; Chimeway gets its own psycopg view of
    # the same session and transaction, with the default adapters.
    return db.borrow(raw)


def database_url(using: str = "default") -> str:
    """A connection string for Django's ``using`` database, for Chimeway's own pool:
    ``Chimeway(database_url("default"), ...)``."""
    from django.db import connections

    params: dict[str, Any] = connections[using].get_connection_params()
    kept = {k: v for k, v in params.items() if k in _CONNINFO_KEYS and v not in (None, "")}
    return make_conninfo("", **kept)
