"""Wall time of the test suite at two commits, one after the other on this machine, each from
a clean export of the commit (``git archive``: no cache, no stray files), with the same
Python, the same database server and the same pytest command (the README's, plus
``-p no:cacheprovider`` so that neither run writes a cache into the other's way).

    .venv/bin/python -m bench.suite_time --base 3c46d69 --head HEAD
    .venv/bin/python -m bench.suite_time --base 7c6caec --head HEAD --common-files
    .venv/bin/python -m bench.suite_time --base 7c6caec --head HEAD --common-tests --pairs 2

``--common-files`` runs only the test files that exist at both commits. ``--common-tests`` is
the same-work comparison with an older, smaller suite: it collects the node ids at both
commits (``pytest --collect-only -q``, each in its own export) and runs, at each commit,
exactly the tests whose node id is in both (parametrized ids included), deselecting the rest
through ``bench/suite_time_select.py`` (a plugin copied beside the export, so an old commit
runs it too). ``--pairs 2`` runs the pair twice, the second time head first, so that neither
commit always gets the quieter machine. Both commits run with this Python's packages (the
newest dependencies the older commit allows), only their own ``chimeway`` and ``tests``.
``CHIMEWAY_TEST_DATABASE_URL`` picks the server as in the suite. Figures: wall seconds, the
counts pytest printed, seconds per test, and the 1-minute load average before and after each
run (the machine may be shared: read the load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).with_name("suite_time_select.py")
SUMMARY = re.compile(r"\d+ (passed|failed|errors?).* in [\d.]+s")
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


def exported_env(tree: Path, plugins: Path | None = None) -> dict[str, str]:
    """The exported tree comes first on sys.path: its chimeway, not the installed one."""
    path = [str(tree)] + ([str(plugins)] if plugins else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def collect(rev: str, python: str, files: list[str]) -> set[str]:
    """The node ids pytest collects at ``rev`` (in a clean export, as the run will see it)."""
    with tempfile.TemporaryDirectory(prefix="suite-time-collect-") as tmp:
        tree = Path(tmp) / "tree"
        export(rev, tree)
        command = [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        done = subprocess.run(
            [*command, *files],
            check=False,
            cwd=tree,
            env=exported_env(tree),
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise SystemExit(f"collecting at {rev} failed:\n{done.stdout[-3000:]}{done.stderr}")
    return {line for line in done.stdout.splitlines() if "::" in line}


def run(
    rev: str,
    python: str,
    files: list[str],
    extra: list[str],
    log: Path,
    nodeids: Path | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        tree = Path(tmp) / "tree"
        export(rev, tree)
        plugins = None
        select: list[str] = []
        if nodeids is not None:
            plugins = Path(tmp) / "plugins"
            plugins.mkdir()
            shutil.copy(PLUGIN, plugins / PLUGIN.name)
            select = ["-p", PLUGIN.stem]
        env = exported_env(tree, plugins)
        if nodeids is not None:
            env["SUITE_TIME_NODEIDS"] = str(nodeids)
        command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select, *extra, *files]
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        with log.open("wb") as out:
            code = subprocess.run(
                command, check=False, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wall = time.monotonic() - started
        load_after = os.getloadavg()[0]
    # pytest's last line of counts (a server stopped at exit may print after it).
    lines = log.read_text(errors="replace").strip().splitlines()
    tail = [line for line in lines if SUMMARY.search(line)][-1:] or lines[-1:] or [""]
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
    p.add_argument(
        "--common-tests", action="store_true", help="only the node ids collected at both commits"
    )
    p.add_argument(
        "--pairs", type=int, default=1, help="run the pair this many times, alternating the order"
    )
    p.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = p.parse_args()
    # Each run's working directory is its export: a relative interpreter path must not move.
    if os.sep in args.python:
        args.python = os.path.abspath(args.python)
    common = args.common_files or args.common_tests
    files = sorted(test_files(args.base) & test_files(args.head)) if common else []
    nodeids = None
    selection: dict[str, Any] = {}
    if args.common_tests:
        collected = {rev: collect(rev, args.python, files) for rev in (args.base, args.head)}
        shared = collected[args.base] & collected[args.head]
        nodeids = args.logs / "suite-time-common-tests.txt"
        nodeids.write_text("".join(f"{n}\n" for n in sorted(shared)))
        selection = {
            "collected_base": len(collected[args.base]),
            "collected_head": len(collected[args.head]),
            "common_tests": len(shared),
            "nodeids": str(nodeids),
        }
        print(
            f"collected {selection['collected_base']} tests at {args.base}, "
            f"{selection['collected_head']} at {args.head}: {len(shared)} in both "
            f"(in {len(files)} common files)",
            flush=True,
        )
    results = []
    ratios = []
    for pair in range(1, args.pairs + 1):
        order = [("base", args.base), ("head", args.head)]
        if pair % 2 == 0:
            order.reverse()  # every other pair head first: neither always gets the quieter turn
        walls = {}
        for label, rev in order:
            log = args.logs / f"suite-time-{label}-{pair}.log"
            result = {
                "label": label,
                "pair": pair,
                **run(rev, args.python, files, args.pytest_args, log, nodeids),
            }
            results.append(result)
            walls[label] = result["wall_s"]
            print(
                f"pair {pair} {label} {result['rev']}: {result['wall_s']} s wall, "
                f"{result['summary']}, {result['s_per_test']} s/test, "
                f"load {result['load_1m_before']} -> {result['load_1m_after']}",
                flush=True,
            )
        ratio = round(walls["head"] / walls["base"], 3) if walls["base"] else None
        ratios.append(ratio)
        print(
            f"pair {pair} head/base wall: {ratio}"
            + (f" over {len(files)} common files" if files else ""),
            flush=True,
        )
    print(
        json.dumps(
            {
                "bench": "suite_time",
                "common_files": len(files) if files else None,
                **selection,
                "head_over_base_wall": ratios[0] if len(ratios) == 1 else ratios,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
