"""docs/adapters stays true: its Python compiles, its links resolve, and the example
adapter in writing-an-adapter.md passes its own tests against a real local server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "adapters"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)#:]+\.(?:md|py))(?:#[^)]*)?\)")
PAGES = sorted(DOCS.glob("*.md"))


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_there_is_a_page_per_adapter() -> None:
    names = {page.stem for page in PAGES}

    assert names >= {"index", "smtp", "webhook", "slack", "twilio", "fallback"}
    assert "writing-an-adapter" in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles(page: Path) -> None:
    blocks = python_blocks(page)

    assert blocks, f"{page.name} has no python example"
    for index, block in enumerate(blocks):
        compile(block, f"{page.name} python block {index}", "exec")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        assert (page.parent / target).resolve().exists(), f"{page.name} links to {target}"


def test_the_example_adapter_passes_its_tests(tmp_path: Path) -> None:
    blocks = python_blocks(DOCS / "writing-an-adapter.md")
    files = [b for b in blocks if b.startswith("# ") and b.split("\n", 1)[0].endswith(".py")]
    assert len(files) == 2
    for block in files:
        (tmp_path / block.split("\n", 1)[0].removeprefix("# ").strip()).write_text(block)
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_acme_text.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
