"""The cost of OpenTelemetry on the hot path: end-to-end steps/s of the two-step workflow
(in_app -> OnOutcome delivered -> email) with workers that trace and meter every step and
with workers that do not (the ``otel`` extra installed, no provider set: Chimeway then makes
no span, which is the cost of a library user who has not configured OpenTelemetry), on the
same database, alternating off / on, on / off, ... in one run.

    .venv/bin/python -m bench.telemetry        # 3 pairs of phases of 1,000 runs each

The tracing workers set an SDK ``TracerProvider`` whose ``BatchSpanProcessor`` hands the
spans to an exporter that drops them (the cost measured is Chimeway's spans, the SDK and the
trace-context lookup of each job, not a collector's network), and a ``MeterProvider`` with
an in-memory reader. The triggers are traced in this process in both phases (their events
carry a traceparent either way; only the workers differ). Each phase starts its own workers;
the ratio is the median of the pairs' ratios.
"""

from __future__ import annotations

import statistics
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from bench import common
from bench.common import Workers
from bench.policy import phase


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--n", type=int, default=1000, help="recipients per phase (2 steps each)")
    p.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    p.add_argument("--timeout", type=float, default=300)
    common.worker_options(p, processes=2)
    args = p.parse_args()
    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("bench")
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with common.fresh_database(args.database_url, "telemetry", args.keep_db) as url:
        for r in range(args.rounds):
            for kind in ("off", "on") if r % 2 == 0 else ("on", "off"):
                env = {"BENCH_LATENCY_MS": "0", "BENCH_OTEL": "1" if kind == "on" else "0"}
                with Workers.from_args(url, args, f"otel-{kind}", env=env) as workers:
                    result = phase(
                        url,
                        workers,
                        f"{kind}{r}",
                        args.n,
                        args.timeout,
                        around=lambda: tracer.start_as_current_span("bench trigger"),
                    )
                results[kind].append(result)
                common.note(f"{kind}{r}: {result['per_s']} steps/s")
        pairs = [
            on["per_s"] / off["per_s"]
            for off, on in zip(results["off"], results["on"], strict=True)
        ]
        ratio = statistics.median(pairs)
        cpu = {
            kind: 1000 * sum(r["worker_cpu_s"] for r in rs) / sum(r["steps"] for r in rs)
            for kind, rs in results.items()
        }
        common.table(
            f"OpenTelemetry on the hot path: {args.n} two-step runs per phase, "
            f"{args.processes} worker processes x concurrency {args.concurrency}",
            ["phase", "steps", "seconds", "steps/s", "machine busy", "worker CPU ms/step"],
            [
                [
                    f"{kind} #{i + 1}",
                    r["steps"],
                    r["seconds"],
                    r["per_s"],
                    r["machine_busy"],
                    1000 * r["worker_cpu_s"] / r["steps"],
                ]
                for i in range(args.rounds)
                for kind in ("off", "on")
                for r in [results[kind][i]]
            ],
        )
        print(
            f"\nratio on/off, median of the pairs = {ratio:.2f} "
            f"(pairs: {', '.join(f'{x:.2f}' for x in pairs)})"
        )
        print(
            f"worker CPU per step: off {cpu['off']:.3f} ms, on {cpu['on']:.3f} ms "
            f"(x{cpu['on'] / cpu['off']:.2f})"
        )
        common.json_line(
            "telemetry",
            url,
            {"n": args.n, "rounds": args.rounds, "ratio": ratio, "pairs": pairs, **results},
        )


if __name__ == "__main__":
    main()
