"""Duplicates per 1,000 sends under kill -9: a burst with real worker processes, one killed
(SIGKILL) every ``--kill-every`` sends and replaced at once, as a supervisor would.

Ground truth comes from the adapter, not from Chimeway's rows: every call that reaches the
"provider" appends one line (``O_APPEND`` + ``fsync``) to a file shared by every worker
process, before it returns, so a send made just before a kill is counted. A duplicate is a
call beyond the first for a delivery; the figure is duplicates per 1,000 calls. Each phase
also counts the deliveries cancelled as ``abandoned`` (interrupted ``max_takeovers`` times),
and of those the ones no call of which reached the provider.

Two phases, each on a fresh database: ``fan-out`` (one trigger of ``--n`` recipients: the
deliveries go out in ``deliver_many`` chunks of ``--batch-size``) and ``runs`` (``--n / 2``
two-step runs: in_app, then email once delivered: ``--n`` deliveries, the second steps as
lone jobs). The same script runs on an older checkout for the before figure (it uses only
the API both have): copy it to ``bench/`` there and run it with that checkout's virtualenv.

    .venv/bin/python -m bench.chaos                      # ~2 min on 2 cores
    .venv/bin/python -m bench.chaos --n 1000 --kill-every 200

The workers run ``chimeway worker --app bench.chaos:build`` (this module), configured by
``CHAOS_SENDS`` (the ground-truth file), ``CHAOS_SEND_MS`` (the adapter's latency),
``CHAOS_BATCH`` and ``CHAOS_STUCK_AFTER``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chimeway import (
    Chimeway,
    DeliveryRequest,
    Maintenance,
    Notifier,
    OnOutcome,
    Recipient,
    RetryPolicy,
    Sent,
    Step,
    Workflow,
    migrations,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TERMINAL = ("succeeded", "suppressed", "cancelled", "digested")
CONTENT = {
    "in_app": {"headline": "Hi", "body": "Hi", "primary_action": {"label": "Open", "url": "/"}},
    "email": {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"},
}

# -- the app the workers run ------------------------------------------------------------------


class GroundTruth:
    """Appends ``<delivery id> <attempt number> <pid>`` to ``$CHAOS_SENDS`` for every call,
    durably, then answers after ``$CHAOS_SEND_MS``."""

    def deliver(self, request: DeliveryRequest) -> Sent:
        line = f"{request.delivery_id} {request.attempt_number} {os.getpid()}\n".encode()
        fd = os.open(os.environ["CHAOS_SENDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        time.sleep(float(os.environ.get("CHAOS_SEND_MS", "5")) / 1000)
        return Sent(provider_message_id=f"m-{request.delivery_id}")


class FanOut(Notifier):
    key = "chaos_fan_out"
    version = 1

    def recipients(self, params: dict[str, Any]) -> list[Recipient | dict[str, Any]]:
        return [{"id": f"u{i}"} for i in range(params["n"])]

    def build(self, params: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
        return {}

    def render(self, params: dict[str, Any], recipient: Recipient, channel: str) -> dict[str, Any]:
        return CONTENT[channel]


TWO_STEPS = Workflow(
    key="chaos_two_steps",
    version=1,
    steps=[
        Step(
            "notice", channel="in_app", progress=[OnOutcome(outcome="delivered", to_step="email")]
        ),
        Step("email", channel="email"),
    ],
)


class Runs(FanOut):
    key = "chaos_runs"

    def workflow(self, params: dict[str, Any], recipient: Recipient) -> Workflow | None:
        return TWO_STEPS


def build() -> Chimeway:
    adapter = GroundTruth()
    tick = "* * * * * *"
    return Chimeway(
        os.environ["CHIMEWAY_DATABASE_URL"],
        notifiers=[FanOut, Runs],
        adapters={"in_app": adapter, "email": adapter},
        default_retry=RetryPolicy(max_attempts=10, base_delay=dt.timedelta(0), jitter=0),
        stuck_after=dt.timedelta(seconds=float(os.environ.get("CHAOS_STUCK_AFTER", "5"))),
        delivery_batch_size=int(os.environ.get("CHAOS_BATCH", "50")),
        maintenance=Maintenance(
            sweep_cron=tick,
            stalled_cron=tick,
            stalled_after=dt.timedelta(seconds=3),
            redrive_after=dt.timedelta(seconds=5),
        ),
    )


# -- the bench ------------------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo("", **{**conninfo_to_dict(url), "dbname": dbname})


@contextlib.contextmanager
def fresh_database(url: str) -> Any:
    name = f"chimeway_bench_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = with_dbname(url, name)
    try:
        migrations.migrate(target)
        yield target
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query.encode(), params or None).fetchone()
    return row[0] if row else None


class Worker:
    """One ``chimeway worker`` process on this module's app."""

    def __init__(self, url: str, env: dict[str, str], concurrency: int, log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chimeway.cli",
                    "worker",
                    "--app",
                    "bench.chaos:build",
                    "--concurrency",
                    str(concurrency),
                    "--poll-interval",
                    "0.5",
                    "--log-level",
                    "WARNING",
                ],
                cwd=ROOT,
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")},
                    "CHIMEWAY_DATABASE_URL": url,
                    "PYTHONPATH": str(ROOT),
                    **env,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def calls(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.split()[0] for line in path.read_text().splitlines() if line.count(" ") == 2]


def phase(name: str, url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sends = tmp / f"{name}.sends"
    env = {
        "CHAOS_SENDS": str(sends),
        "CHAOS_SEND_MS": str(args.send_ms),
        "CHAOS_BATCH": str(args.batch_size),
        "CHAOS_STUCK_AFTER": str(args.stuck_after),
    }
    log = tmp / f"{name}.log"
    os.environ.update(CHIMEWAY_DATABASE_URL=url, **env)
    with build() as cw, psycopg.connect(url, autocommit=True) as conn:
        worker = Worker(url, env, args.concurrency, log)
        try:
            started = time.monotonic()
            if name == "fan-out":
                cw.trigger("chaos_fan_out", {"n": args.n}, tenant_id="t", idempotency_key="b")
            else:
                cw.trigger("chaos_runs", {"n": args.n // 2}, tenant_id="t", idempotency_key="b")
            kills, next_kill = 0, args.kill_every
            while True:
                made = len(calls(sends))
                if made >= next_kill and kills < args.max_kills:
                    worker.kill()
                    kills += 1
                    next_kill = made + args.kill_every
                    worker = Worker(url, env, args.concurrency, log)
                open_rows = scalar(
                    conn,
                    "SELECT (SELECT count(*) FROM chimeway_deliveries WHERE status::text <> "
                    "ALL(%s)) + (SELECT count(*) FROM chimeway_workflow_runs WHERE state IN "
                    "('active', 'waiting'))",
                    list(TERMINAL),
                )
                planned = scalar(conn, "SELECT count(*) FROM chimeway_deliveries")
                # The trigger committed every first delivery; a run is open until it ends,
                # so nothing open means done (a run whose first step was abandoned ends
                # without its second: fewer than ``--n`` deliveries then).
                if planned and open_rows == 0:
                    break
                if time.monotonic() > started + args.timeout:
                    raise TimeoutError(f"{name}: {open_rows} rows open after {args.timeout}s")
                time.sleep(0.02)
            elapsed = time.monotonic() - started
        finally:
            worker.stop()  # also when the phase failed: no worker outlives the bench
        succeeded = scalar(
            conn, "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'"
        )
        abandoned = [
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM chimeway_deliveries WHERE suppression_reason = 'abandoned'"
            )
        ]
    made = calls(sends)
    per_delivery = Counter(made)
    duplicates = len(made) - len(per_delivery)
    return {
        "phase": name,
        "deliveries": planned,
        "succeeded": succeeded,
        # Cancelled after max_takeovers interrupted sends; "never sent": no call of theirs
        # reached the provider (each interruption found it claimed, waiting for a thread).
        "abandoned": len(abandoned),
        "abandoned_never_sent": sum(1 for d in abandoned if d not in per_delivery),
        "kills": kills,
        "sends": len(made),
        "duplicates": duplicates,
        "repeated_deliveries": sum(1 for n in per_delivery.values() if n > 1),
        "duplicates_per_1000_sends": round(1000 * duplicates / max(len(made), 1), 1),
        "duplicates_per_kill": round(duplicates / max(kills, 1), 1),
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    p.add_argument("--n", type=int, default=2000, help="deliveries per phase")
    p.add_argument("--kill-every", type=int, default=300, help="sends between two kills")
    p.add_argument("--max-kills", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=50, help="delivery_batch_size")
    p.add_argument("--concurrency", type=int, default=10, help="the worker's job slots")
    p.add_argument("--send-ms", type=float, default=5.0, help="the adapter's latency")
    p.add_argument("--stuck-after", type=float, default=5.0, help="seconds")
    p.add_argument("--timeout", type=float, default=300.0, help="per phase, seconds")
    p.add_argument("--label", default="", help="a name for this checkout in the JSON line")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="chimeway-bench-chaos-") as folder:
        for name in ("fan-out", "runs"):
            with fresh_database(args.database_url) as url:
                results.append(phase(name, url, args, Path(folder)))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    headers = list(results[0])
    widths = [max(len(h), *(len(str(r[h])) for r in results)) for h in headers]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in results:
        print("  ".join(str(row[h]).rjust(w) for h, w in zip(headers, widths, strict=True)))
    settings = {k: v for k, v in vars(args).items() if k != "database_url"}
    print(json.dumps({"bench": "chaos", "settings": settings, "results": results}))


if __name__ == "__main__":
    main()
