"""The Python in docs/ is at least valid, and the example test in docs/testing.md passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_testing_md_has_python_blocks() -> None:
    assert len(python_blocks(DOCS / "testing.md")) >= 3


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_python_block_compiles(page: Path) -> None:
    for index, block in enumerate(python_blocks(page)):
        compile(block, f"{page.name} python block {index}", "exec")


def test_the_example_test_in_testing_md_passes(committed_db: str, tmp_path: Path) -> None:
    [example] = [b for b in python_blocks(DOCS / "testing.md") if b.startswith("# test_")]
    name = example.splitlines()[0].removeprefix("# ").strip()
    (tmp_path / name).write_text(example, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env.update(CHIMEWAY_DATABASE_URL=committed_db, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
