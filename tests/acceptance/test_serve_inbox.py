"""Acceptance: the inbox on ``chimeway serve`` as a real process: CORS from the command line,
a stream opened the way ``EventSource`` opens it (token in the query) whose token never
reaches the log, and a shutdown that does not wait forever for open streams."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chimeway import Chimeway
from tests.acceptance.conftest import ROOT, wait_until
from tests.adapters.conftest import free_port
from tests.integration.inbox_support import SECRET, Stream, send

pytestmark = pytest.mark.slow

ORIGIN = "https://app.example.com"


def test_chimeway_serve_streams_the_inbox_and_stops_with_streams_open(
    committed_db: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env.update(CHIMEWAY_DATABASE_URL=committed_db, CHIMEWAY_SECRET=SECRET, PYTHONPATH=str(ROOT))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chimeway.cli",
                "serve",
                "--port",
                str(port),
                "--cors-origin",
                ORIGIN,
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    stream: Stream | None = None
    try:
        wait_until(up, timeout=30)
        with Chimeway(committed_db, secret=SECRET) as cw:
            token = cw.inbox.token("t", "ana", dt.timedelta(minutes=5))
            stream = Stream(f"{base}/v1/inbox/stream?access_token={token}", {"Origin": ORIGIN})
            assert stream.next("counts").data == {"unseen": 0, "unread": 0, "total": 0}
            notification = send(cw, "ana")
            assert stream.next("item").data["id"] == str(notification)
        preflight = httpx.options(
            f"{base}/v1/inbox/mark",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert token not in log.read_text()
        assert "inbox tokens signed" in log.read_text()
        # The stream is still open: the server closes it rather than wait for it forever.
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        assert time.monotonic() - stopping < 15
        assert stream.ended(timeout=5)
    finally:
        if stream is not None:
            stream.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
