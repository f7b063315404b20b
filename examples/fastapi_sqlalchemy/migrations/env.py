"""Alembic's environment: the app's migrations and Chimeway's, on one psycopg 3 engine."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

url = context.config.get_main_option("sqlalchemy.url") or os.environ["CHIMEWAY_DATABASE_URL"]
scheme, _, rest = url.partition("://")
engine = create_engine(f"postgresql+psycopg://{rest}")

try:
    with engine.connect() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
