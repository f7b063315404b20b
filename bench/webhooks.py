"""Webhook ingestion: provider events stored as ingress rows (each with its
``process_webhook`` job), against raw INSERTs of the same rows, in the same run.

    .venv/bin/python -m bench.webhooks                 # 5,000 events, 8 threads
    .venv/bin/python -m bench.webhooks --n 1000 --threads 4

Every event is one Standard Webhooks receipt (one event per request, as most providers send
them), signed before the clock starts. No worker runs, so nothing else competes; the jobs
wait in the queue. Three phases of ``--n`` events each, ``--threads`` threads, one event per
transaction:

1. ``raw INSERT``: the same ingress row written with a plain ``INSERT`` through a psycopg
   pool: the floor of what one row per transaction costs on this server;
2. ``cw.webhooks.process``: verify the signature, parse, insert the row and defer its job in
   one transaction, in this process;
3. ``POST /v1/webhooks/receipts``: the same over HTTP to ``chimeway serve`` (uvicorn, one
   process, a subprocess of this script). The load comes from another subprocess
   (``--load``): ``--threads`` keep-alive connections on one uvloop loop, each sending the
   next pre-built request when the previous answer is complete, so the client costs a few
   hundredths of a millisecond per request and the figure measures the server. The server's
   CPU per event is read around the load; every answer must be ``200``.

The target is 1,000 events/s into ingress rows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import standardwebhooks
import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from bench import bench_app, common
from bench.common import CpuMeter
from chimeway import Chimeway
from chimeway.feedback import SendGridProvider
from chimeway.feedback.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from chimeway.feedback.types import DELIVERY_ID_KEY

TARGET = 1000.0
#: Signs the SendGrid batches; the server verifies with its public half.
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC_KEY = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()
ROOT = Path(__file__).resolve().parents[1]
RAW_INSERT = (
    "INSERT INTO chimeway_webhook_ingress (provider, provider_event_id, kind, delivery_ref,"
    " occurred_at, evidence) VALUES (%s, %s, 'delivered', %s, now(), %s)"
)

Event = tuple[bytes, dict[str, str]]


def receipts(n: int) -> list[Event]:
    """``n`` signed receipts about made-up deliveries, each with its own event id."""
    signer = standardwebhooks.Webhook(bench_app.RECEIPTS_SECRET)
    events = []
    for _ in range(n):
        body = json.dumps(
            {
                "type": "message.delivered",
                "timestamp": "2025-05-01T12:00:00Z",
                "data": {"delivery_id": str(uuid.uuid4()), "code": "250"},
            }
        )
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body),
            "content-type": "application/json",
        }
        events.append((body.encode(), headers))
    return events


def sendgrid_batches(n: int, size: int) -> list[Event]:
    """``n`` SendGrid ``delivered`` events about made-up deliveries, ``size`` to a request
    (SendGrid posts arrays of events), each request signed with :data:`SENDGRID_KEY`."""
    requests = []
    for start in range(0, n, size):
        body = json.dumps(
            [
                {
                    "event": "delivered",
                    "sg_event_id": f"sg_{uuid.uuid4().hex}",
                    "sg_message_id": f"{uuid.uuid4().hex}.filter0001",
                    DELIVERY_ID_KEY: str(uuid.uuid4()),
                    "timestamp": int(time.time()),
                }
                for _ in range(min(size, n - start))
            ]
        ).encode()
        timestamp = str(int(time.time()))
        signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: timestamp,
            "content-type": "application/json",
        }
        requests.append((body, headers))
    return requests


def serve_app() -> Chimeway:
    """What ``chimeway serve`` runs here: the bench app, also taking SendGrid webhooks
    signed by :data:`SENDGRID_KEY` (its public half comes in the environment)."""
    cw = bench_app.build()
    sendgrid = SendGridProvider(os.environ["BENCH_SENDGRID_PUBLIC_KEY"])
    cw.engine.webhook_providers[sendgrid.name] = sendgrid
    return cw


def timed(
    url: str,
    threads: int,
    events: Sequence[Event],
    send: Callable[[Event], None],
    server: psutil.Process | None = None,
) -> dict[str, Any]:
    """Send every event from ``threads`` threads; events/s from the first to the last, and
    the CPU seconds this process (the senders) and ``server`` (if any) spent meanwhile."""
    meter = CpuMeter(url=url)
    me = psutil.Process()
    mine, theirs = _cpu(me), _cpu(server)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, events))
    elapsed = time.perf_counter() - start
    return {
        "events": len(events),
        "seconds": round(elapsed, 2),
        "per_s": round(len(events) / elapsed, 1),
        "sender_cpu_s": round(_cpu(me) - mine, 2),
        "server_cpu_s": round(_cpu(server) - theirs, 2) if server else None,
        **meter.read(),
    }


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def raw_phase(url: str, threads: int, events: Sequence[Event]) -> dict[str, Any]:
    with ConnectionPool(url, min_size=threads, max_size=threads, open=True) as pool:

        def insert(event: Event) -> None:
            body, headers = event
            data = json.loads(body)["data"]
            with pool.connection() as conn:
                conn.execute(
                    RAW_INSERT,
                    ("raw", headers["webhook-id"], data["delivery_id"], Jsonb({"code": "250"})),
                )

        return timed(url, threads, events, insert)


def api_phase(url: str, threads: int, events: Sequence[Event]) -> dict[str, Any]:
    with bench_app.build(url) as cw:
        cw.engine.resize_pool(threads)

        def process(event: Event) -> None:
            body, headers = event
            result = cw.webhooks.process("receipts", body, headers)
            assert len(result.ingress_ids) == 1

        return timed(url, threads, events, process)


def http_phase(
    url: str,
    connections: int,
    events: int,
    requests: Sequence[tuple[str, Event]],
) -> dict[str, Any]:
    """POST each (path, request) to ``chimeway serve`` (a subprocess) from :func:`load`
    (another subprocess), over ``connections`` keep-alive connections; ``events``: how many
    events they hold in all. The server's CPU seconds are read around the load, the
    client's from itself."""
    port = free_port()
    log = Path(f"/tmp/chimeway-bench-serve-{port}.log")
    env = {
        **os.environ,
        "CHIMEWAY_DATABASE_URL": url,
        "PYTHONPATH": str(ROOT),
        "BENCH_SENDGRID_PUBLIC_KEY": SENDGRID_PUBLIC_KEY,
    }
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chimeway.cli",
                "serve",
                "--app",
                "bench.webhooks:serve_app",
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        common.wait_for(lambda: _up(base, server), 30, what="chimeway serve up")
        with tempfile.NamedTemporaryFile(suffix=".requests") as file:
            pickle.dump([http_request(port, path, e) for path, e in requests], file)
            file.flush()
            meter = CpuMeter(url=url)
            serving = psutil.Process(server.pid)
            before = _cpu(serving)
            ran = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.webhooks",
                    "--load",
                    file.name,
                    "--port",
                    str(port),
                    "--threads",
                    str(connections),
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                check=False,
            )
            if ran.returncode:
                raise RuntimeError(f"the load generator failed: {ran.stderr.decode()[-2000:]}")
            server_cpu = _cpu(serving) - before
            measured = meter.read()
        client = json.loads(ran.stdout.decode().strip().splitlines()[-1])
        assert client["statuses"] == {"200": len(requests)}, client["statuses"]
        return {
            "events": events,
            "requests": len(requests),
            "seconds": round(client["seconds"], 2),
            "per_s": round(events / client["seconds"], 1),
            "sender_cpu_s": round(client["cpu_s"], 2),
            "server_cpu_s": round(server_cpu, 2),
            **measured,
        }
    finally:
        server.terminate()
        server.wait(15)


def _up(base: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise RuntimeError(f"chimeway serve exited {server.returncode}")
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def http_request(port: int, path: str, event: Event) -> bytes:
    """The bytes of one keep-alive ``POST`` of ``event``."""
    body, headers = event
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Sender(asyncio.Protocol):
    """One keep-alive connection sending requests one after another: the next leaves when
    the answer to the previous one is complete."""

    def __init__(
        self, todo: deque[bytes], statuses: Counter[str], done: asyncio.Future[None]
    ) -> None:
        self.todo, self.statuses, self.done = todo, statuses, done
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.need = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def send_next(self) -> None:
        assert self.transport is not None
        if not self.todo:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.buffer, self.need = b"", -1
        self.transport.write(self.todo.popleft())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.need = end + 4 + length
        if len(self.buffer) >= self.need:
            self.statuses[self.buffer[9:12].decode()] += 1
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))


def load(requests_file: str, port: int, connections: int) -> None:
    """The load generator (``--load``, a process of its own): sends the pickled requests
    over ``connections`` keep-alive connections from one uvloop loop, every request once,
    and prints one JSON line: seconds from the first request to the last answer, this
    process's CPU seconds meanwhile, answers by status."""
    with open(requests_file, "rb") as f:
        todo: deque[bytes] = deque(pickle.load(f))
    statuses: Counter[str] = Counter()

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        senders = []
        for _ in range(connections):
            done: asyncio.Future[None] = loop.create_future()
            _, sender = await loop.create_connection(
                lambda done=done: _Sender(todo, statuses, done),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
            senders.append(sender)
        cpu, start = time.process_time(), time.perf_counter()
        for sender in senders:
            sender.send_next()
        await asyncio.gather(*(sender.done for sender in senders))
        return {
            "seconds": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "statuses": dict(statuses),
        }

    print(json.dumps(uvloop.run(run())))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=5000, help="events per phase")
    p.add_argument(
        "--threads",
        type=int,
        default=8,
        help="sending threads (over HTTP: keep-alive connections, one request in flight each)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=10,
        help="events per SendGrid request in the batched phase (0: no batched phase)",
    )
    p.add_argument("--load", metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        load(args.load, args.port, args.threads)
        return
    with common.fresh_database(args.database_url, "webhooks", args.keep_db) as url:
        common.note(f"signing {3 * args.n} receipts")
        batches = [receipts(args.n) for _ in range(3)]
        common.note("raw INSERT")
        raw = raw_phase(url, args.threads, batches[0])
        common.note(f"raw: {raw['per_s']} rows/s; cw.webhooks.process")
        api = api_phase(url, args.threads, batches[1])
        common.note(f"api: {api['per_s']} events/s; POST /v1/webhooks/receipts")
        receipts_path = "/v1/webhooks/receipts"
        http = http_phase(url, args.threads, args.n, [(receipts_path, e) for e in batches[2]])
        common.note(f"http: {http['per_s']} events/s")
        batched = None
        if args.batch > 0:
            common.note(f"POST /v1/webhooks/sendgrid, {args.batch} events per request")
            requests = [("/v1/webhooks/sendgrid", e) for e in sendgrid_batches(args.n, args.batch)]
            batched = http_phase(url, args.threads, args.n, requests)
            common.note(f"batched: {batched['per_s']} events/s")
        stored = common.scalar(
            url, "SELECT count(*) FROM chimeway_webhook_ingress WHERE provider = 'receipts'"
        )
        jobs = common.scalar(
            url,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:process_webhook'",
        )
        expected = (3 if batched else 2) * args.n
        assert stored + (args.n if batched else 0) == jobs == expected, (stored, jobs)

        def row(name: str, phase: dict[str, Any]) -> list[Any]:
            return [
                name,
                phase["events"],
                phase["seconds"],
                phase["per_s"],
                phase["per_s"] / raw["per_s"],
                phase["machine_busy"],
                1000 * phase["postgres_cpu_s"] / phase["events"],
                1000 * phase["sender_cpu_s"] / phase["events"],
                "-"
                if phase["server_cpu_s"] is None
                else 1000 * phase["server_cpu_s"] / phase["events"],
            ]

        common.table(
            f"Webhook ingestion: {args.n} events per phase, {args.threads} threads, "
            "one event per request (raw: per transaction)",
            [
                "phase",
                "events",
                "seconds",
                "per second",
                "vs raw",
                "machine busy",
                "PG CPU ms/event",
                "this process CPU ms/event",
                "server CPU ms/event",
            ],
            [
                row("raw INSERT of the ingress row", raw),
                row("cw.webhooks.process (row + job)", api),
                row("POST /v1/webhooks/receipts (chimeway serve)", http),
                *(
                    [row(f"POST /v1/webhooks/sendgrid, {args.batch} events/request", batched)]
                    if batched
                    else []
                ),
            ],
        )
        worst = min(api["per_s"], http["per_s"])
        verdict = "met" if worst >= TARGET else "MISSED"
        print(
            f"\nslowest ingestion path {worst:,.0f} events/s (target >= {TARGET:,.0f}): {verdict}"
            " (one event per request; the batched phase is not part of the verdict)"
        )
        common.json_line(
            "webhooks",
            url,
            {
                "n": args.n,
                "threads": args.threads,
                "raw": raw,
                "api": api,
                "http": http,
                "batch": args.batch,
                "http_batched": batched,
                "target_per_s": TARGET,
                "met": worst >= TARGET,
            },
        )


if __name__ == "__main__":
    main()
