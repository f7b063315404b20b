"""Acceptance: the README's first command, ``chimeway demo`` on the embedded server, through
the real console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    out = proc.stdout
    for name in ("ada", "grace", "linus", "margaret", "alan"):
        assert f"== {name} ==" in out
    assert "wait_cancelled_by_signal" in out  # grace read her notice
    assert "stopped_on_bounced" in out  # linus's email bounced
    assert "Summary: 5 runs (4 completed, 1 stopped); 9 deliveries (1 bounced, 8 sent)" in out
    # Real SMTP on 127.0.0.1: three emails accepted, linus's refused with 550 5.1.1.
    assert "The SMTP server accepted 3 email(s)." in out
    assert "smtp: rcpt refused: 550 5.1.1 mailbox unavailable" in out
