"""How long a newcomer waits for ``chimeway demo`` (the README's first command) on the
embedded server, against the floor of the same machine in the same run: ``chimeway
migrate`` on that same embedded server, which starts the CLI, the server and the schema
but runs no workflow. Each round uses a fresh data directory (a first run, as on a new
machine). Target: the demo in under 30 s.

    .venv/bin/python -m bench.demo            # 3 rounds
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

TARGET_S = 30.0


def script() -> str:
    beside = Path(sys.executable).parent / "chimeway"
    found = str(beside) if beside.exists() else shutil.which("chimeway")
    if not found:
        raise SystemExit("the chimeway console script is not installed (pip install -e .)")
    return found


def timed(*argv: str) -> float:
    """Seconds ``chimeway <argv>`` takes on a fresh embedded server; raises if it fails."""
    with tempfile.TemporaryDirectory(prefix="chimeway-bench-demo-") as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
        env["CHIMEWAY_DATA_DIR"] = state
        started = time.monotonic()
        proc = subprocess.run(
            [script(), *argv], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"chimeway {' '.join(argv)} failed:\n{proc.stderr}")
    return elapsed


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    demo, migrate = [], []
    for _ in range(args.rounds):  # interleaved, so a busy moment hits both
        migrate.append(timed("migrate"))
        demo.append(timed("demo"))
    rows = [
        ["chimeway migrate (baseline)", *(f"{s:.1f}" for s in migrate)],
        ["chimeway demo", *(f"{s:.1f}" for s in demo)],
    ]
    common.table(
        "Seconds on a fresh embedded server",
        ["command", *(f"round {i + 1}" for i in range(args.rounds))],
        rows,
    )
    worst = max(demo)
    print(
        f"\n{'met' if worst < TARGET_S else 'MISSED'}  demo < {TARGET_S:.0f} s (worst {worst:.1f})"
    )
    common.json_line(
        "demo",
        args.database_url,
        {
            "demo_s": demo,
            "migrate_s": migrate,
            "demo_minus_migrate_median_s": round(
                statistics.median(demo) - statistics.median(migrate), 2
            ),
            "target_s": TARGET_S,
            "met": worst < TARGET_S,
        },
    )


if __name__ == "__main__":
    main()
