"""An app that configures logging itself when it is built (``--app`` of the CLI logging
tests): a handler of its own on the root logger and a level for Chimeway's loggers."""

from __future__ import annotations

import io
import logging
import os

from chimeway import Chimeway

#: The name of the handler the app installs.
HANDLER = "the-app-handler"


def build() -> Chimeway:
    handler = logging.StreamHandler(io.StringIO())
    handler.set_name(HANDLER)
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger("chimeway").setLevel(logging.ERROR)
    return Chimeway(os.environ["CHIMEWAY_DATABASE_URL"])
