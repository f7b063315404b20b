"""Chaos at the most awkward instant: the connection dies after PostgreSQL committed but
before its reply reached the worker, which cannot tell a lost write from a lost reply.

* After a send's record committed: the send must stay recorded once (one attempt, one
  success), never twice.
* After a claim committed: the delivery must still be sent, once, and end; not stay held
  by a process that does not know it holds it.

A real TCP proxy on loopback stands between the engine and the server; armed, it forwards the
statement (or ``COMMIT``) that commits the write, lets the server answer, and cuts both
sides instead of passing the answer on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chimeway import Chimeway, DatabaseUnavailable, Triggered
from tests.integration.conftest import IMMEDIATE, Recorders
from tests.integration.notifiers import Welcome

#: What the record's transaction sends first (then COMMIT), and the claim (autocommit).
APPEND = b"INSERT INTO chimeway_delivery_attempts"
CLAIM = b"AS was_status"
#: The protocol's Parse message up to its statement name, and a Bind of a named statement
#: (unnamed portal): https://www.postgresql.org/docs/current/protocol-message-formats.html
PARSE = re.compile(rb"P[\x00-\xff]{4}([^\x00]*)\x00[^\x00]*$", re.DOTALL)


def _binds(name: bytes, chunk: bytes) -> bool:
    return (
        re.search(rb"B[\x00-\xff]{4}\x00" + re.escape(name) + rb"\x00", chunk, re.DOTALL)
        is not None
    )


class ReplyCutter:
    """A loopback proxy to the database that, once armed, eats the reply that confirms the
    first write whose statement holds ``marker`` (with ``commit``, the reply to the COMMIT of
    its transaction), and closes that connection."""

    def __init__(self, url: str, marker: bytes, *, commit: bool) -> None:
        self.marker = marker
        self.commit = commit
        params = conninfo_to_dict(url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._target: Any = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self._family = socket.AF_UNIX if host.startswith("/") else socket.AF_INET
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = make_conninfo(
            url, host="127.0.0.1", port=self._listener.getsockname()[1], sslmode="disable"
        )
        self.armed = threading.Event()
        self.cut = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(self._family, socket.SOCK_STREAM)
            server.connect(self._target)
            pair = _Pair(client, server)
            threading.Thread(target=self._upstream, args=(pair,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(pair,), daemon=True).start()

    def _upstream(self, pair: _Pair) -> None:
        seen = False
        with contextlib.suppress(OSError):
            while chunk := pair.client.recv(65536):
                runs = self._runs_marked(pair, chunk)
                seen = seen or runs
                confirms = b"COMMIT" in chunk if self.commit else runs
                if seen and confirms and self.armed.is_set():
                    with self._lock:
                        pair.doomed = not self.cut.is_set()
                        self.cut.set()
                pair.server.sendall(chunk)
                if pair.doomed:
                    return  # the server commits and answers; _downstream eats the answer
        pair.close()

    def _runs_marked(self, pair: _Pair, chunk: bytes) -> bool:
        """Whether ``chunk`` executes the statement holding the marker: sent with it
        (unnamed), or a Bind of the prepared statement whose Parse held it (the delivery path
        prepares its statements: the text goes once per connection)."""
        if self.marker in chunk:
            parse = PARSE.search(chunk, 0, chunk.index(self.marker))
            name = parse.group(1) if parse else b""
            if not name:
                return True
            pair.prepared.add(name)
            chunk = chunk[chunk.index(self.marker) :]
        return any(_binds(name, chunk) for name in pair.prepared)

    @staticmethod
    def _downstream(pair: _Pair) -> None:
        with contextlib.suppress(OSError):
            while chunk := pair.server.recv(65536):
                if pair.doomed:
                    break
                pair.client.sendall(chunk)
        pair.close()

    def close(self) -> None:
        self._listener.close()


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.doomed = False
        self.prepared: set[bytes] = set()  # names of prepared statements holding the marker

    def close(self) -> None:
        for end in (self.client, self.server):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.fixture
def cutters(committed_db: str) -> Iterator[Callable[..., ReplyCutter]]:
    made: list[ReplyCutter] = []

    def make(marker: bytes, *, commit: bool) -> ReplyCutter:
        made.append(ReplyCutter(committed_db, marker, commit=commit))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def history(url: str, delivery_id: uuid.UUID) -> tuple[str, list[tuple[int, str]]]:
    with psycopg.connect(url) as conn:
        attempts = conn.execute(
            "SELECT attempt_number, outcome::text FROM chimeway_delivery_attempts "
            "WHERE delivery_id = %s ORDER BY 1",
            [delivery_id],
        ).fetchall()
        row = conn.execute(
            "SELECT status::text FROM chimeway_deliveries WHERE id = %s", [delivery_id]
        ).fetchone()
    assert row is not None
    return row[0], attempts


def test_a_record_whose_commit_reply_is_lost_is_not_recorded_twice(
    cutters: Callable[..., ReplyCutter], adapters: Recorders, committed_db: str
) -> None:
    cutter = cutters(APPEND, commit=True)
    with Chimeway(
        cutter.url, adapters={"in_app": adapters["in_app"]}, default_retry=IMMEDIATE
    ) as cw:
        result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
        assert isinstance(result, Triggered)
        [delivery_id] = result.delivery_ids
        cutter.armed.set()
        cw.deliver(delivery_id)
    assert cutter.cut.is_set(), "the proxy never cut a commit"
    assert len(adapters["in_app"].requests) == 1
    assert history(committed_db, delivery_id) == ("succeeded", [(1, "succeeded")])


def test_a_claim_whose_reply_is_lost_is_still_sent_once(
    cutters: Callable[..., ReplyCutter], adapters: Recorders, committed_db: str
) -> None:
    cutter = cutters(CLAIM, commit=False)
    with Chimeway(
        cutter.url,
        adapters={"in_app": adapters["in_app"]},
        default_retry=IMMEDIATE,
        stuck_after=dt.timedelta(seconds=3),  # it beats every second meanwhile
    ) as cw:
        result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
        assert isinstance(result, Triggered)
        [delivery_id] = result.delivery_ids
        cutter.armed.set()
        with pytest.raises(DatabaseUnavailable):
            cw.deliver(delivery_id)
        assert cutter.cut.is_set(), "the proxy never cut a claim"
        # What follows in a worker: the job is retried, the sweep re-drives stuck deliveries.
        deadline = time.monotonic() + 10
        while history(committed_db, delivery_id)[0] != "succeeded":
            assert time.monotonic() < deadline, history(committed_db, delivery_id)
            cw.sweep()
            cw.deliver(delivery_id)
            time.sleep(0.2)
    assert len(adapters["in_app"].requests) == 1


def test_a_claim_whose_reply_is_lost_is_released_for_other_processes(
    cutters: Callable[..., ReplyCutter], adapters: Recorders, committed_db: str
) -> None:
    """The job that retries the send may run in another worker: the claimant, which lives
    on and beats, releases the delivery it never sent, so the other worker takes it over
    once the claim is stuck_after old (recording the claim as an interrupted attempt, as it
    cannot know that nothing was sent)."""
    cutter = cutters(CLAIM, commit=False)
    stuck = dt.timedelta(seconds=2)
    with (
        Chimeway(
            cutter.url,
            adapters={"in_app": adapters["in_app"]},
            default_retry=IMMEDIATE,
            stuck_after=stuck,
        ) as first,
        Chimeway(
            committed_db,
            adapters={"in_app": adapters["in_app"]},
            default_retry=IMMEDIATE,
            stuck_after=stuck,
        ) as other,
    ):
        result = first.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
        assert isinstance(result, Triggered)
        [delivery_id] = result.delivery_ids
        cutter.armed.set()
        with pytest.raises(DatabaseUnavailable):
            first.deliver(delivery_id)
        assert cutter.cut.is_set(), "the proxy never cut a claim"
        deadline = time.monotonic() + 15
        while other.deliver(delivery_id).action != "succeeded":
            assert time.monotonic() < deadline, history(committed_db, delivery_id)
            time.sleep(0.2)
    assert len(adapters["in_app"].requests) == 1
    assert history(committed_db, delivery_id) == ("succeeded", [(1, "failed"), (2, "succeeded")])
