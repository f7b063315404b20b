"""Acceptance: ``chimeway serve`` as a real process, on a free port."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import ROOT, Workers, wait_until
from tests.adapters.conftest import free_port
from tests.integration.webhook_support import receipt


@pytest.fixture
def served(workers: Workers, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chimeway.cli",
                "serve",
                "--app",
                "tests.acceptance.app:build",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=workers.env(),
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

    try:
        wait_until(up, timeout=30)
        yield base, log
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM), log.read_text()


def test_chimeway_serve_takes_webhooks_and_reports(served: tuple[str, Path]) -> None:
    base, log = served
    body, headers = receipt("delivered", uuid.uuid4())
    stored = httpx.post(f"{base}/v1/webhooks/receipts", content=body, headers=headers)
    assert stored.json() == {"events": 1, "stored": 1, "duplicates": 0}
    forged = httpx.post(f"{base}/v1/webhooks/receipts", content=body, headers={})
    assert forged.status_code == 401
    metrics = httpx.get(f"{base}/metrics").text
    assert 'chimeway_webhook_ingress{state="queued"} 1.0' in metrics
    assert 'chimeway_jobs{queue="chimeway_signals",state="due"} 1.0' in metrics
    started = log.read_text()
    assert f"chimeway serve: {base}; database postgresql://" in started
    assert "webhook providers receipts" in started
