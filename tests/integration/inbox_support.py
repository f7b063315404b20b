"""Helpers for the inbox's HTTP tests: uvicorn serving ``cw.asgi()`` on a thread, and a
server-sent-events reader on another."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chimeway import Chimeway, Triggered
from chimeway.testing import drain
from tests.integration.conftest import Uvicorns
from tests.integration.notifiers import Welcome

SECRET = "an inbox secret that is long enough to sign tokens"

Serve = Callable[..., str]


@pytest.fixture(name="serve")
def serve_fixture(uvicorns: Uvicorns) -> Serve:
    """``serve(cw, cors_origins=...)`` runs uvicorn with ``cw.asgi()``; its base URL."""
    return lambda cw, **options: uvicorns.start(cw.asgi(**options), timeout_graceful_shutdown=2)


def send(cw: Chimeway, user: str, tenant: str = "t") -> uuid.UUID:
    """Trigger an in-app notification for ``user`` and send it (committed); its id."""
    result = cw.trigger(
        Welcome, {"users": [user]}, tenant_id=tenant, idempotency_key=str(uuid.uuid4())
    )
    assert isinstance(result, Triggered)
    drain(cw)
    return result.notification_ids[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Sse:
    name: str
    data: dict[str, Any]
    id: str | None
    at: float  # time.monotonic() when received


class Stream:
    """``GET /v1/inbox/stream`` read on a thread; :meth:`next` waits for an event."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[Sse | None] = queue.Queue()
        self.status: int | None = None
        self._opened = threading.Event()
        self._socket: socket.socket | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=60.0))
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the stream did not answer"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                self._opened.set()
                name, data, ident = "message", [], None
                for line in response.iter_lines():
                    if line == "":
                        if data:
                            self.events.put(
                                Sse(name, json.loads("\n".join(data)), ident, time.monotonic())
                            )
                        name, data, ident = "message", [], None
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line.startswith("id: "):
                        ident = line[4:]
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()
            self.events.put(None)

    def next(self, name: str | None = None, timeout: float = 5.0) -> Sse:
        """The next event (named ``name``, skipping others); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name or 'event'} within {timeout} s"
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            assert event is not None, "the stream ended"
            if name is None or event.name == name:
                return event

    def ended(self, timeout: float = 10.0) -> bool:
        """Whether the server ended the stream within ``timeout`` (events are drained)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.events.get(timeout=0.1) is None:
                    return True
            except queue.Empty:
                continue
        return False

    def close(self) -> None:
        """Hang up (as a closed browser tab does) and wait for the reader to stop."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._client.close()
