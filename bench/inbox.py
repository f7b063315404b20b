"""The in-app inbox: SSE fan-out latency, and reads of a 1M-notification feed.

Fan-out: ``chimeway serve`` runs as a real subprocess (uvicorn, one process, one LISTEN
connection); this process opens N streams (``GET /v1/inbox/stream``, one recipient each,
plain asyncio sockets so the client costs little), waits until every one has its first
``counts`` event, then triggers one in-app notification to all N recipients and sends it
with ``cw.deliver_many`` in chunks of 50 (what a worker's ``deliver_many`` jobs do) from a
process of its own, noting when each chunk's transaction has committed (``time.monotonic``,
one clock for the machine's processes). Measured per recipient: from that commit (or from
the NOTIFY, if a bare listener saw it earlier: ``deliver_many`` returns a little after its
commit) to its ``item`` event read off the socket. Baseline in the same run: a bare
psycopg ``LISTEN chimeway_inbox`` connection in this process, from the same commits to the
NOTIFY reaching it (negative when ``deliver_many`` returned after the NOTIFY arrived).

Feed reads: 1,000,000 notifications seeded server-side (``INSERT ... SELECT
generate_series``: 1,000 recipients x 1,000 items, half read, then ``VACUUM ANALYZE``),
then ``cw.inbox.list`` (first page, a page deep in the feed, unread only) and
``cw.inbox.counts`` for random recipients, each timed around the call. Baseline: a primary
key lookup of one notification on the same pool. Target: list p99 < 5 ms.

    .venv/bin/python -m bench.inbox
    .venv/bin/python -m bench.inbox --streams 200 --notifications 100000
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import psycopg

from bench import common
from chimeway import Chimeway, Notifier, Recipient, Triggered

SECRET = "bench secret, long enough to sign inbox tokens"
CHUNK = 50
LIST_TARGET_P99_MS = 5.0


class FanOut(Notifier):
    key = "bench.inbox_fanout"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": f"u{i}"} for i in range(params["n"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return {
            "headline": "Deploy finished",
            "body": "Release 42 is live",
            "primary_action": {"label": "Open", "url": "/releases/42"},
        }


# -- fan-out --------------------------------------------------------------------------------


class SseClient:
    """One stream over a raw HTTP/1.1 socket: records when each ``item`` event arrives."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.opened = asyncio.Event()
        self.items: dict[str, float] = {}  # notification id -> time.monotonic()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            (
                "GET /v1/inbox/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await reader.readline()
        assert b" 200 " in status, status
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # headers
        buffer = b""
        try:
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)  # chunked
                if size == 0:
                    return
                buffer += await reader.readexactly(size)
                await reader.readexactly(2)
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self._event(block.decode())
        finally:
            writer.close()

    def _event(self, block: str) -> None:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if fields.get("event") == "counts":
            self.opened.set()
        elif fields.get("event") == "item":
            now = time.monotonic()
            self.items.setdefault(json.loads(fields["data"])["id"], now)


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHIMEWAY_SECRET": SECRET, "CHIMEWAY_DATABASE_URL": url}
    log = open(f"/tmp/chimeway-bench-inbox-serve-{os.getpid()}.log", "wb")  # noqa: SIM115
    common.note(f"chimeway serve log: {log.name}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chimeway.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        cwd=common.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    def up() -> bool:
        assert proc.poll() is None, "chimeway serve exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    common.wait_for(up, 30, every=0.1, what="chimeway serve")
    return proc


def raw_listener(url: str, seen: dict[str, float], stop: threading.Event) -> threading.Thread:
    """The baseline: a bare LISTEN connection noting when each item's NOTIFY arrives."""
    ready = threading.Event()

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN chimeway_inbox")
            ready.set()
            while not stop.is_set():
                for notice in conn.notifies(timeout=0.2):
                    kind, _, notification_id = notice.payload.split(" ")
                    if kind == "item":
                        seen.setdefault(notification_id, time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    return thread


def send_all(url: str, n: int, out: Any) -> None:
    """In a process of its own (so this one's event loop only reads sockets): trigger to all
    N recipients, then send the deliveries chunk by chunk, putting the time each
    notification's chunk committed (``time.monotonic()``, one clock for every process of
    the machine) and the seconds taken on ``out``."""
    committed: dict[str, float] = {}
    with Chimeway(url, secret=SECRET, notifiers=[FanOut], pool_max_size=2) as cw:
        started = time.monotonic()
        result = cw.trigger(FanOut, {"n": n}, tenant_id="t", idempotency_key=str(uuid.uuid4()))
        assert isinstance(result, Triggered)
        with cw.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, notification_id FROM chimeway_deliveries WHERE id = ANY(%s)",
                [result.delivery_ids],
            ).fetchall()
        of = {delivery: str(notification) for delivery, notification in rows}
        ids = list(of)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            cw.deliver_many(chunk)  # returns once the recording transaction has committed
            now = time.monotonic()
            for delivery in chunk:
                committed[of[delivery]] = now
        out.put((committed, time.monotonic() - started))


async def fan_out(url: str, n: int, port: int) -> dict[str, Any]:
    with Chimeway(url, secret=SECRET, notifiers=[FanOut], pool_max_size=4) as cw:
        clients = [SseClient(port, cw.inbox.token("t", f"u{i}")) for i in range(n)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        opened = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in clients)), 120)
        open_s = time.monotonic() - opened
        common.note(f"{n} streams open in {open_s:.1f}s")
        listeners = common.scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE '%%LISTEN chimeway_inbox'",
        )
        raw: dict[str, float] = {}
        stop = threading.Event()
        listener = raw_listener(url, raw, stop)
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        sender = context.Process(target=send_all, args=(url, n, out))
        sender.start()
        committed, send_s = await asyncio.to_thread(out.get, True, 120)
        await asyncio.to_thread(sender.join, 30)
        deadline = time.monotonic() + 60
        while sum(len(c.items) for c in clients) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        listener.join(5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    received = {k: v for c in clients for k, v in c.items.items()}
    # deliver_many returns a little after its commit: a NOTIFY seen earlier bounds the
    # commit better (conservative for the SSE figure; the baseline then reads as 0).
    commit = {k: min(at, raw.get(k, at)) for k, at in committed.items()}
    sse = [received[k] - commit[k] for k in commit if k in received]
    bare = [raw[k] - committed[k] for k in committed if k in raw]
    return {
        "streams": n,
        "listen_connections": listeners,
        "streams_open_s": round(open_s, 2),
        "send_s": round(send_s, 2),
        "received": len(received),
        "sse_commit_to_event": common.summary_ms(sse),
        "baseline_commit_to_notify": common.summary_ms(bare),
    }


# -- feed reads ---------------------------------------------------------------------------

SEED = [
    (
        "events",
        "INSERT INTO chimeway_events (id, tenant_id, notification_key, notification_version,"
        " idempotency_key) SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(e), 12, '0'))::uuid,"
        " 't', 'bench.inbox', 1, 'e' || e FROM generate_series(1, %(events)s) AS e",
    ),
    (
        "notifications",
        "INSERT INTO chimeway_notifications (event_id, tenant_id, recipient_id, category,"
        " contents, created_at, inbox_at, seen_at, read_at)"
        " SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(e), 12, '0'))::uuid, 't',"
        " 'r' || r, 'deploys',"
        ' \'{"in_app": {"headline": "Deploy finished", "body": "Release is live",'
        ' "primary_action": {"label": "Open", "url": "/releases"}}}\'::jsonb,'
        " now() - make_interval(secs => e * 60),"
        " now() - make_interval(secs => e * 60 - 5),"
        " CASE WHEN mod(e, 4) <> 0 THEN now() END,"
        " CASE WHEN mod(e, 2) = 0 THEN now() END"
        " FROM generate_series(1, %(events)s) AS e, generate_series(1, %(recipients)s) AS r",
    ),
]


def seed(url: str, events: int, recipients: int) -> list[list[Any]]:
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        for name, statement in SEED:
            started = time.monotonic()
            cur = conn.execute(statement.encode(), {"events": events, "recipients": recipients})
            rows.append([name, cur.rowcount, round(time.monotonic() - started, 1)])
            common.note(f"seeded {name}: {cur.rowcount:,} rows in {rows[-1][2]}s")
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE chimeway_events, chimeway_notifications")
        rows.append(["vacuum analyze", 0, round(time.monotonic() - started, 1)])
    return rows


def timed(call: Any, n: int) -> list[float]:
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def feed_reads(url: str, events: int, recipients: int, samples: int) -> dict[str, Any]:
    rng = random.Random(7)
    with Chimeway(url, pool_max_size=2) as cw:

        def who() -> str:
            return f"r{rng.randint(1, recipients)}"

        def deep_cursor() -> str:
            page = cw.inbox.list("t", who(), limit=100)
            assert page.next_cursor is not None
            return page.next_cursor

        cursors = [deep_cursor() for _ in range(20)]
        with cw.pool.connection() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM chimeway_notifications TABLESAMPLE SYSTEM (1) LIMIT 1000"
                )
            ]

        def by_key() -> None:
            with cw.pool.connection() as conn:
                conn.execute(
                    "SELECT * FROM chimeway_notifications WHERE id = %s", [rng.choice(ids)]
                ).fetchone()

        def first_page() -> None:
            assert len(cw.inbox.list("t", who()).items) == 50

        def deep_page() -> None:
            # A cursor 100 items in, applied to a random recipient: the same index descent.
            cw.inbox.list("t", who(), cursor=rng.choice(cursors))

        def unread() -> None:
            cw.inbox.list("t", who(), status="unread")

        def counts() -> None:
            assert cw.inbox.counts("t", who()).total == events

        for warm in (by_key, first_page, counts):
            timed(warm, 50)
        return {
            "primary key lookup (baseline)": common.summary_ms(timed(by_key, samples)),
            "list, first page of 50": common.summary_ms(timed(first_page, samples)),
            "list, a page 100 items in": common.summary_ms(timed(deep_page, samples)),
            "list, unread only": common.summary_ms(timed(unread, samples)),
            "counts": common.summary_ms(timed(counts, samples)),
        }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--streams", type=int, default=1000, help="open streams (recipients)")
    p.add_argument("--notifications", type=int, default=1_000_000, help="seeded for reads")
    p.add_argument("--recipients", type=int, default=1000, help="whose feeds share them")
    p.add_argument("--samples", type=int, default=2000, help="timed calls per read")
    p.add_argument("--port", type=int, default=0, help="chimeway serve's port (0: a free one)")
    args = p.parse_args()
    results: dict[str, Any] = {}
    with common.fresh_database(args.database_url, "inbox", args.keep_db) as url:
        port = args.port or _free_port()
        server = start_server(url, port)
        try:
            results["fan_out"] = asyncio.run(fan_out(url, args.streams, port))
        finally:
            server.terminate()
            server.wait(20)
        fan = results["fan_out"]
        common.table(
            f"SSE fan-out: {fan['streams']:,} open streams, one trigger to all "
            f"({fan['listen_connections']} LISTEN connection, {fan['received']:,} received)",
            ["commit ->", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [label, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
                for label, s in (
                    ("item event at the client", fan["sse_commit_to_event"]),
                    ("NOTIFY at a bare listener", fan["baseline_commit_to_notify"]),
                )
            ],
        )
        events = max(1, args.notifications // args.recipients)
        common.note(f"seeding {events * args.recipients:,} notifications")
        results["seed"] = seed(url, events, args.recipients)
        results["reads"] = feed_reads(url, events, args.recipients, args.samples)
        common.table(
            f"Feed reads at {events * args.recipients:,} notifications "
            f"({args.recipients:,} recipients x {events:,}; target list p99 < "
            f"{LIST_TARGET_P99_MS} ms)",
            ["read", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                [label, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]]
                for label, s in results["reads"].items()
            ],
        )
        common.json_line("inbox", url, results)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
