"""A pytest plugin for ``bench.suite_time --common-tests``: keeps only the tests whose node id
is listed (one per line) in the file named by ``SUITE_TIME_NODEIDS`` and deselects the rest.

Selecting after collection, by exact node id, works for any parametrized id (brackets, spaces,
``::`` inside a parameter), which node ids passed as command-line arguments do not. The file is
copied next to the exported tree and loaded with ``-p suite_time_select``, so that an old
commit (whose ``bench/`` lacks it) runs it too. It depends on nothing but pytest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    listed = os.environ.get("SUITE_TIME_NODEIDS")
    if not listed:
        return
    wanted = set(Path(listed).read_text().splitlines())
    kept = [item for item in items if item.nodeid in wanted]
    dropped = [item for item in items if item.nodeid not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
