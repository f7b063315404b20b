"""Alembic: Chimeway's migrations inside your own Alembic history.

Add one revision that calls :func:`upgrade`; it applies every Chimeway migration (and
Procrastinate's schema, unless someone else manages it) that the database lacks, in the
revision's transaction, so ``alembic upgrade head`` leaves the same schema ``chimeway
migrate`` would, recorded the same way (``chimeway migrate status`` agrees)::

    # migrations/versions/0002_chimeway.py
    from chimeway.contrib import alembic as chimeway_alembic

    revision = "0002_chimeway"
    down_revision = "0001_orders"

    def upgrade() -> None:
        chimeway_alembic.upgrade()

    def downgrade() -> None:
        chimeway_alembic.downgrade()

After upgrading Chimeway, add another revision with the same body: it applies only what is
new. Needs ``pip install 'chimeway[sqlalchemy]'`` and a ``postgresql+psycopg`` engine.
"""

from __future__ import annotations

import logging

from alembic import context
from alembic import op as alembic_op
from alembic.operations import Operations

from chimeway import migrations
from chimeway.contrib.sqlalchemy import connection
from chimeway.errors import ConfigurationError, MigrationError

logger = logging.getLogger(__name__)


def upgrade(op: Operations | None = None) -> migrations.MigrateResult:
    """Apply Chimeway's pending migrations on the running revision's connection, in its
    transaction (``op``: the revision's ``alembic.op``, the default)."""
    if context.is_offline_mode():
        raise ConfigurationError(
            "Chimeway's Alembic helper needs a database (no --sql): for an SQL script, "
            "use `chimeway migrate print` (`--chimeway-only` beside your own Procrastinate)"
        )
    bind = (op or alembic_op).get_bind()
    result = migrations.migrate_on(connection(bind), report=_log)
    _log(f"applied {len(result.applied)} Chimeway migration(s)")
    return result


def downgrade(op: Operations | None = None) -> None:
    """Chimeway's migrations are not reversible: refuse, having changed nothing."""
    raise MigrationError(
        "Chimeway's migrations cannot be reverted; drop the database (or the chimeway_* "
        "tables) instead"
    )


def _log(message: str) -> None:
    logger.info(message, extra={"action": "migrate.alembic"})
