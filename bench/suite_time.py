"""Wall time of the test suite at two commits, one after the other on this machine, each from
a clean export of the commit (``git archive``: no cache, no stray files), with the same
Python, the same database server and the same pytest command (the README's, plus
``-p no:cacheprovider`` so that neither run writes a cache into the other's way).

    .venv/bin/python -m bench.suite_time --base 3c46d69 --head HEAD
    .venv/bin/python -m bench.suite_time --base 7c6caec --head HEAD --common-files

``--common-files`` runs only the test files that exist at both commits (the fair comparison
with an older, smaller suite). ``CHIMEWAY_TEST_DATABASE_URL`` picks the server as in the
suite. Figures: wall seconds, the counts pytest printed, seconds per test, and the 1-minute
load average before and after each run (the machine may be shared: read the load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def test_files(rev: str) -> set[str]:
    listed = git("ls-tree", "-r", "--name-only", rev, "tests").split()
    return {f for f in listed if Path(f).name.startswith("test_") and f.endswith(".py")}


def export(rev: str, into: Path) -> None:
    archive = into.with_suffix(".tar")
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, stdout=out)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()


def run(rev: str, python: str, files: list[str], extra: list[str], log: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        tree = Path(tmp) / "tree"
        export(rev, tree)
        # The exported tree comes first on sys.path: its chimeway, not the installed one.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *files]
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        with log.open("wb") as out:
            code = subprocess.run(
                command, check=False, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wall = time.monotonic() - started
        load_after = os.getloadavg()[0]
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(tail[0])}
    ran = counts.get("passed", 0) + counts.get("failed", 0)
    return {
        "rev": git("rev-parse", "--short", rev).strip(),
        "exit_code": code.returncode,
        "wall_s": round(wall, 1),
        "counts": counts,
        "s_per_test": round(wall / ran, 3) if ran else None,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(load_after, 2),
        "summary": tail[0],
        "log": str(log),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare against (run first)")
    p.add_argument("--head", default="HEAD", help="the commit measured (run second)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--common-files", action="store_true", help="only files in both commits")
    p.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = p.parse_args()
    files = sorted(test_files(args.base) & test_files(args.head)) if args.common_files else []
    results = []
    for label, rev in (("base", args.base), ("head", args.head)):
        log = args.logs / f"suite-time-{label}.log"
        result = {"label": label, **run(rev, args.python, files, args.pytest_args, log)}
        results.append(result)
        print(
            f"{label} {result['rev']}: {result['wall_s']} s wall, {result['summary']}, "
            f"{result['s_per_test']} s/test, load {result['load_1m_before']} -> "
            f"{result['load_1m_after']}",
            flush=True,
        )
    base, head = results
    ratio = round(head["wall_s"] / base["wall_s"], 3) if base["wall_s"] else None
    print(f"head/base wall: {ratio}" + (f" over {len(files)} common files" if files else ""))
    print(
        json.dumps(
            {
                "bench": "suite_time",
                "common_files": len(files) if files else None,
                "head_over_base_wall": ratio,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
