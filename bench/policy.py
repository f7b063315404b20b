"""The cost of policy on the hot path: end-to-end steps/s of the two-step workflow (in_app ->
OnOutcome delivered -> email) for a tenant with no policy at all and for a tenant with
preferences, quiet hours and caps configured for every recipient, none of which stops a
delivery (so both phases send the same steps), on the very same workers, alternating
none / policy, policy / none, ... in one run.

    .venv/bin/python -m bench.policy              # 4 pairs of phases of 2,000 runs each

What the policy tenant has, per recipient: two opt-outs of other channels and one of
another workflow, quiet hours (a window six hours away, in UTC), a cap of 100 emails an
hour; as the tenant's defaults: two opt-outs (a category, a workflow), quiet hours in each
recipient's zone (also six hours away), a cap of 1,000 deliveries a day. So planning and the
claim read and evaluate rules, windows and caps (the caps count the recipient's recent
deliveries) for every delivery. The pairs alternate which phase goes first; the ratio is the
median of the pairs' ratios (each pair ran back to back). Target: policy/none >= 0.9.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from bench import bench_app, common
from bench.common import CpuMeter, Workers
from chimeway import Chimeway, PreferenceScope, PreferenceUpdate

TARGET_RATIO = 0.9


def configure(cw: Chimeway, tenant: str, users: list[str]) -> None:
    """Everything the policy tenant has (the module's docstring); nothing stops a send."""
    now = dt.datetime.now(dt.UTC)
    start, end = (now + dt.timedelta(hours=6)).time(), (now + dt.timedelta(hours=8)).time()
    cw.preferences.set_many(
        tenant,
        [
            PreferenceUpdate(None, PreferenceScope(category="marketing"), False),
            PreferenceUpdate(None, PreferenceScope(workflow="bench_other"), False),
            *(
                PreferenceUpdate(user, scope, False)
                for user in users
                for scope in (
                    PreferenceScope("sms"),
                    PreferenceScope("push"),
                    PreferenceScope("email", workflow="bench_other"),
                )
            ),
        ],
    )
    cw.preferences.set_quiet_hours(tenant, None, start, end)
    cw.preferences.set_cap(tenant, None, 1000, dt.timedelta(days=1))
    for user in users:
        cw.preferences.set_quiet_hours(tenant, user, start, end, timezone="UTC")
        cw.preferences.set_cap(tenant, user, 100, dt.timedelta(hours=1), channel="email")


def phase(
    url: str,
    workers: Workers,
    tenant: str,
    n: int,
    timeout: float,
    around: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Trigger the workflow for ``n`` recipients of ``tenant`` in one transaction (inside
    ``around()``: bench.telemetry's caller span); time from its commit to the last attempt of
    the last step."""
    done_before = common.scalar(
        url, "SELECT count(*) FROM chimeway_workflow_runs WHERE state = 'completed'"
    )
    with bench_app.build(url) as cw, cw.pool.connection() as conn, around():
        cw.trigger(
            bench_app.TwoStep,
            {"n": n, "prefix": tenant},
            tenant_id=tenant,
            idempotency_key=f"{tenant}-{time.time_ns()}",
            conn=conn,
        )
        meter = CpuMeter(workers, url)
        conn.commit()
        start = time.time()
    common.wait_for(
        lambda: common.scalar(
            url,
            "SELECT count(*) >= %s FROM chimeway_workflow_runs WHERE state = 'completed'",
            [done_before + n],
        ),
        timeout,
        every=0.1,
        what=f"{n} runs of {tenant} completed",
    )
    cpu = meter.read()
    end = common.scalar(
        url,
        "SELECT extract(epoch FROM max(a.finished_at))::float8 FROM chimeway_delivery_attempts a"
        " JOIN chimeway_deliveries d ON d.id = a.delivery_id WHERE d.tenant_id = %s",
        [tenant],
    )
    steps = common.scalar(
        url,
        "SELECT count(*) FROM chimeway_deliveries WHERE tenant_id = %s AND status = 'succeeded'",
        [tenant],
    )
    suppressed = common.scalar(
        url,
        "SELECT count(*) FROM chimeway_deliveries WHERE tenant_id = %s AND status <> 'succeeded'",
        [tenant],
    )
    elapsed = end - start
    return {
        "runs": n,
        "steps": steps,
        "not_sent": suppressed,
        "seconds": round(elapsed, 2),
        "per_s": round(steps / elapsed, 1),
        **cpu,
    }


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=2000, help="recipients per phase (2 steps each)")
    p.add_argument("--rounds", type=int, default=4, help="none/policy pairs")
    p.add_argument("--timeout", type=float, default=600)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    env = {"BENCH_LATENCY_MS": "0"}
    os.environ.update(env)
    results: dict[str, list[dict[str, Any]]] = {"none": [], "policy": []}
    with common.fresh_database(args.database_url, "policy", args.keep_db) as url:
        workers = Workers.from_args(url, args, "policy", env=env)
        common.note(f"configuring {args.rounds} policy tenants of {args.n} recipients")
        with bench_app.build(url) as cw:
            for r in range(args.rounds):
                configure(cw, f"policy{r}", [f"policy{r}-{i}" for i in range(args.n)])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # as a database in use would be: not timed
        with workers:
            for r in range(args.rounds):
                # Alternate which goes first: a phase right after another runs warmer.
                for kind in ("none", "policy") if r % 2 == 0 else ("policy", "none"):
                    tenant = f"{kind}{r}"
                    result = phase(url, workers, tenant, args.n, args.timeout)
                    assert result["not_sent"] == 0, f"policy stopped deliveries: {result}"
                    results[kind].append(result)
                    common.note(f"{tenant}: {result['per_s']} steps/s")
        rate = {kind: statistics.mean(r["per_s"] for r in rs) for kind, rs in results.items()}
        # Each pair ran back to back: its ratio is the least disturbed by the machine's load.
        pairs = [
            p["per_s"] / n["per_s"] for n, p in zip(results["none"], results["policy"], strict=True)
        ]
        ratio = statistics.median(pairs)
        cpu = {
            kind: 1000 * sum(r["worker_cpu_s"] for r in rs) / sum(r["steps"] for r in rs)
            for kind, rs in results.items()
        }
        common.table(
            f"Policy on the hot path: {args.n} two-step runs per phase, {args.processes} worker "
            f"processes x concurrency {args.concurrency}, poll {args.poll_interval:g}s",
            [
                "phase",
                "steps",
                "seconds",
                "steps/s",
                "machine busy",
                "worker CPU ms/step",
                "PG CPU ms/step",
            ],
            [
                [
                    f"{kind} #{i + 1}",
                    r["steps"],
                    r["seconds"],
                    r["per_s"],
                    r["machine_busy"],
                    1000 * r["worker_cpu_s"] / r["steps"],
                    1000 * r["postgres_cpu_s"] / r["steps"],
                ]
                for i in range(args.rounds)
                for kind in ("none", "policy")
                for r in [results[kind][i]]
            ],
        )
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(
            f"\nratio policy/none, median of the pairs = {ratio:.2f} "
            f"(pairs: {', '.join(f'{x:.2f}' for x in pairs)}; "
            f"means: {rate['policy'] / rate['none']:.2f}) (target >= {TARGET_RATIO}): {verdict}"
        )
        print(
            f"worker CPU per step: none {cpu['none']:.3f} ms, policy {cpu['policy']:.3f} ms "
            f"(x{cpu['policy'] / cpu['none']:.2f})"
        )
        common.json_line(
            "policy",
            url,
            {
                "n": args.n,
                "rounds": args.rounds,
                "processes": args.processes,
                "concurrency": args.concurrency,
                "poll_interval": args.poll_interval,
                "none": results["none"],
                "policy": results["policy"],
                "none_steps_per_s": round(rate["none"], 1),
                "policy_steps_per_s": round(rate["policy"], 1),
                "pair_ratios": [round(x, 3) for x in pairs],
                "ratio": round(ratio, 3),
                "worker_cpu_ms_per_step": {k: round(v, 3) for k, v in cpu.items()},
                "target_ratio": TARGET_RATIO,
                "met": ratio >= TARGET_RATIO,
            },
        )


if __name__ == "__main__":
    main()
