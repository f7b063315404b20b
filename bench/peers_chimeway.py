"""Chimeway's side of ``bench.peers``: ``chimeway worker --app bench.bench_app:build`` on a
database migrated by ``chimeway.migrations.migrate``.

* Throughput: the two-step workflow (``bench_app.TwoStep``: in_app -> ``OnOutcome
  delivered`` -> email, the adapter returns at once). ``single``: N one-recipient triggers
  from ``threads`` threads, timed from the first trigger; ``fanout``: one trigger to N
  recipients, timed from its commit. Until the last ``delivery_attempts.finished_at``.
* Signals: N runs wait (``bench_app.SignalWait``); ``track_signal`` commit -> the resumed
  run's email attempt starts (``delivery_attempts.started_at``).
* Timers: one-recipient ``bench_app.Timers`` triggers (recipient 0: ``WaitUntil(1 s)``);
  lateness = the ``reactivated_from_wait`` transition's time minus the wait's ``due_at``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import bench_app, common
from bench.common import Workers
from bench.peers_phase import Phase, Settings, WorkerSet, paced, rows, vacuum

COMPLETED = "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'"
COMPLETED_AT_LEAST = "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'completed'"
SUCCEEDED = "SELECT count(*) FROM chimeway_deliveries WHERE status = 'succeeded'"


class ChimewaySystem:
    """Chimeway on its database (migrated by ``common.fresh_database``)."""

    def __init__(self, settings: Settings, url: str, walinspect: bool) -> None:
        self.settings = settings
        self.url = url
        self.walinspect = walinspect

    def _workers(self, label: str) -> WorkerSet:
        s = self.settings
        return WorkerSet(
            [
                Workers(
                    self.url,
                    processes=s.processes,
                    concurrency=s.concurrency,
                    poll_interval=s.poll_interval,
                    log_level=s.log_level,
                    label=f"peers-chimeway-{label}",
                )
            ]
        )

    def throughput(self, mode: str, variant: str, tag: str) -> dict[str, Any]:
        s, n = self.settings, self.settings.n
        vacuum(self.settings, "chimeway", self.url)
        done0 = common.scalar(self.url, COMPLETED)
        with Phase(s, self.url, self.walinspect) as phase:
            with bench_app.build(self.url) as cw, self._workers(tag) as workers:
                cw.engine.resize_pool(s.threads + 1)
                # Warm: the definition is stored and cached before the clock starts.
                cw.trigger(
                    bench_app.TwoStep,
                    {"n": 1, "prefix": f"{tag}-warm"},
                    tenant_id="t",
                    idempotency_key=f"{tag}-warm",
                )
                common.wait_for(
                    lambda: common.scalar(self.url, COMPLETED_AT_LEAST, [done0 + 1]),
                    timeout=60,
                    what="warm-up run",
                )
                steps0 = common.scalar(self.url, SUCCEEDED)
                phase.start(workers)
                if mode == "single":
                    start = time.time()

                    def one(i: int) -> None:
                        cw.trigger(
                            bench_app.TwoStep,
                            {"n": 1, "prefix": f"{tag}-{i}"},
                            tenant_id="t",
                            idempotency_key=f"{tag}-{i}",
                        )

                    with ThreadPoolExecutor(s.threads) as pool:
                        list(pool.map(one, range(n)))
                    produced = time.time() - start
                else:
                    with cw.pool.connection() as conn:
                        cw.trigger(
                            bench_app.TwoStep,
                            {"n": n, "prefix": tag},
                            tenant_id="t",
                            idempotency_key=tag,
                            conn=conn,
                        )
                        conn.commit()
                        start = time.time()
                    produced = 0.0
                phase.wait(
                    COMPLETED_AT_LEAST,
                    done0 + 1 + n,
                    timeout=s.timeout,
                    every=0.1,
                    what=f"{n} runs completed",
                )
                phase.completed()
                end = phase.poll(
                    "SELECT extract(epoch FROM max(finished_at))::float8 "
                    "FROM chimeway_delivery_attempts"
                )
                steps = phase.poll(SUCCEEDED) - steps0
            return {"units": n, "enqueue_s": round(produced, 3), **phase.result(start, end, steps)}

    def signals(self, tag: str) -> list[float]:
        s, n = self.settings, self.settings.samples
        vacuum(self.settings, "chimeway", self.url)
        done0 = common.scalar(self.url, COMPLETED)
        with bench_app.build(self.url) as cw, self._workers(tag):
            cw.trigger(
                bench_app.SignalWait, {"n": n, "prefix": tag}, tenant_id="t", idempotency_key=tag
            )
            common.wait_for(
                lambda: common.scalar(
                    self.url,
                    "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'waiting'",
                    [n],
                ),
                s.timeout,
                every=0.2,
                what=f"{n} runs waiting",
            )
            time.sleep(1.0)  # let the workers go idle
            committed = {}
            for i in paced(n, s.rate):
                cw.track_signal("t", f"{tag}-{i}", bench_app.SIGNAL)
                committed[f"{tag}-{i}"] = time.time()
            common.wait_for(
                lambda: common.scalar(self.url, COMPLETED_AT_LEAST, [done0 + n]),
                s.timeout,
                every=0.2,
                what=f"{n} signalled runs completed",
            )
        attempts = rows(
            self.url,
            "SELECT d.recipient_id, extract(epoch FROM a.started_at)::float8 "
            "FROM chimeway_delivery_attempts a JOIN chimeway_deliveries d "
            "ON d.id = a.delivery_id WHERE d.channel = 'email' AND d.recipient_id LIKE %s",
            [f"{tag}-%"],
        )
        return [started - committed[recipient] for recipient, started in attempts]

    def timers(self, tag: str) -> list[float]:
        s, n = self.settings, self.settings.samples
        vacuum(self.settings, "chimeway", self.url)
        done0 = common.scalar(self.url, COMPLETED)
        with bench_app.build(self.url) as cw, self._workers(tag):
            since = time.time()
            for i in paced(n, s.rate):
                cw.trigger(
                    bench_app.Timers,
                    {"n": 1, "prefix": f"{tag}-{i}"},
                    tenant_id="t",
                    idempotency_key=f"{tag}-{i}",
                )
            common.wait_for(
                lambda: common.scalar(self.url, COMPLETED_AT_LEAST, [done0 + n]),
                s.timeout,
                every=0.2,
                what=f"{n} timed runs completed",
            )
        late = rows(
            self.url,
            "SELECT extract(epoch FROM created_at - (context->>'due_at')::timestamptz)::float8 "
            "FROM chimeway_workflow_transitions "
            "WHERE reason = 'reactivated_from_wait' AND created_at >= to_timestamp(%s)",
            [since],
        )
        return [r[0] for r in late]
