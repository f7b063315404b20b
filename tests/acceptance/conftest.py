"""Real ``chimeway worker`` processes against a fresh test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

# The inbox's browser test serves the app in process and sends email to a real SMTP server.
from tests.adapters.conftest import start_smtp  # noqa: F401
from tests.integration.conftest import uvicorns  # noqa: F401 (serve_fixture's servers)
from tests.integration.inbox_support import serve_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met within {timeout}s: {predicate.__doc__ or predicate}"
            )
        time.sleep(every)


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text()


class Workers:
    def __init__(self, url: str, tmp: Path, app: str = "tests.acceptance.app:build") -> None:
        self.url = url
        self.tmp = tmp
        self.app = app  # the --app every worker runs
        self.started: list[Worker] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
        env.update(CHIMEWAY_DATABASE_URL=self.url, PYTHONPATH=str(ROOT), **extra)
        return env

    def start(self, *args: str, new_session: bool = False, **env: str) -> Worker:
        log = self.tmp / f"worker-{len(self.started)}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chimeway.cli",
                    "worker",
                    "--app",
                    self.app,
                    "--poll-interval",
                    "0.2",
                    *args,
                ],
                cwd=ROOT,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        worker = Worker(proc, log)
        self.started.append(worker)
        # Ready once Procrastinate has registered the worker.
        wait_until(lambda: proc.poll() is not None or self.registered() >= 1, timeout=30)
        assert proc.poll() is None, worker.output()
        return worker

    def registered(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        return int(row[0]) if row else 0

    def cleanup(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=10)


@pytest.fixture
def workers(committed_db: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(committed_db, tmp_path)
    yield pool
    pool.cleanup()


@pytest.fixture
def app_env(committed_db: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Build the acceptance app in this process, with the same environment as the workers."""
    from tests.acceptance import app

    def build(**env: str) -> Any:
        monkeypatch.setenv("CHIMEWAY_DATABASE_URL", committed_db)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return app.build()

    return build
