"""Acceptance: the README's first command, ``chimeway demo`` on the embedded server, through
the real console script."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def chimeway_script() -> str:
    beside = Path(sys.executable).parent / "chimeway"
    found = str(beside) if beside.exists() else shutil.which("chimeway")
    assert found, "the chimeway console script is not installed"
    return found


def test_demo_runs_on_the_embedded_server(tmp_path: Path) -> None:
    """How long it takes is measured by bench/demo.py (target: under 30 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env["CHIMEWAY_DATA_DIR"] = str(tmp_path / "state")
    proc = subprocess.run(
        [chimeway_script(), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "using the embedded PostgreSQL server" in proc.stderr
    # The inbox page of one recipient, served while the demo runs (no browser needed).
    assert re.search(
        r"ada's inbox, live while the demo runs: "
        r"http://127\.0\.0\.1:\d+/v1/inbox/example#token=v1\.\S+",
        proc.stderr,
    )
    out = proc.stdout
    for name in ("ada", "grace", "linus", "margaret", "alan"):
        assert f"== {name} ==" in out
    assert "wait_cancelled_by_signal" in out  # grace read her notice
    assert "stopped_on_bounced" in out  # linus's email bounced
    assert "Summary: 5 runs (4 completed, 1 stopped); 9 deliveries (1 bounced, 8 sent)" in out
    # Real SMTP on 127.0.0.1: three emails accepted, linus's refused with 550 5.1.1.
    assert "The SMTP server accepted 3 email(s)." in out
    assert "smtp: rcpt refused: 550 5.1.1 mailbox unavailable" in out


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_the_demo_can_keep_its_inbox_page_up(committed_db: str, sigint: str) -> None:
    """Started with SIGINT ignored too, as a background job of a non-interactive shell (CI)
    starts it: Ctrl-C must still stop the page."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env["PYTHONFAULTHANDLER"] = "1"
    command = [chimeway_script(), "--database-url", committed_db, "demo", "--keep-serving"]
    if sigint == "ignored":
        # The shell runs the demo with SIGINT ignored (trap '' INT), as `cmd &` does.
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            lines = []
            for line in proc.stderr:  # ends if the demo exits early
                lines.append(line)
                if "stays up at" in line:
                    break
            found = re.search(r"stays up at (http://\S+)/v1/inbox/example#token=(\S+)", lines[-1])
            assert found, "".join(lines)
            base, token = found[1], found[2]
            assert httpx.get(f"{base}/v1/inbox/example").status_code == 200
            page = httpx.get(f"{base}/v1/inbox", headers={"Authorization": f"Bearer {token}"})
            [item] = page.json()["items"]
            assert item["content"]["body"] == "Barbara mentioned you in Q3 plan"
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Where it hangs: its signal masks, and every thread's stack (faulthandler
                # prints them on SIGABRT).
                masks = [
                    line
                    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if line.startswith(("SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd"))
                ]
                proc.send_signal(signal.SIGABRT)
                proc.wait(timeout=10)
                pytest.fail(
                    f"the demo did not stop on SIGINT ({masks}):\n" + proc.stderr.read()[-20000:]
                )
            assert code == 0
        finally:
            if proc.poll() is None:
                proc.kill()
