"""Where Chimeway finds its database."""

from __future__ import annotations

import os
from collections.abc import Callable

from chimeway import embedded

ENV_DATABASE_URL = "CHIMEWAY_DATABASE_URL"


def database_url(explicit: str | None = None, report: Callable[[str], None] = print) -> str:
    """The database URL: explicit, else ``$CHIMEWAY_DATABASE_URL``, else the embedded server."""
    url = explicit or os.environ.get(ENV_DATABASE_URL)
    if url:
        return url
    return embedded.database_url(report)
