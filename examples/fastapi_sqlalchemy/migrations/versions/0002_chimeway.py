"""Chimeway's schema (and Procrastinate's, unless the app manages it), in this revision's
transaction. After upgrading Chimeway, a new revision with the same body applies what is
new."""

from chimeway.contrib import alembic as chimeway_alembic

revision = "0002_chimeway"
down_revision = "0001_orders"


def upgrade() -> None:
    chimeway_alembic.upgrade()


def downgrade() -> None:
    chimeway_alembic.downgrade()
