"""Group commit (chimeway.engine.batching) with real threads: concurrent submits share
flushes, each caller gets its own result or its own copy of the error, nobody waits forever."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from chimeway.engine.batching import GroupCommit
from chimeway.errors import DatabaseUnavailable


def test_a_lone_submit_flushes_at_once() -> None:
    batches: list[list[int]] = []

    def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit()
    assert group.submit(3, flush) == 30
    assert batches == [[3]]


def test_submits_that_arrive_during_a_flush_share_the_next_one() -> None:
    release = threading.Event()
    first_started = threading.Event()
    batches: list[list[int]] = []

    def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if items == [0]:
            first_started.set()
            assert release.wait(10)
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(max_batch=3)
    results: dict[int, int] = {}

    def submit(i: int) -> None:
        results[i] = group.submit(i, flush)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert first_started.wait(10)
    others = [threading.Thread(target=submit, args=(i,)) for i in range(1, 6)]
    for thread in others:
        thread.start()
    while len(group._pending) < 5:  # all five queued behind the running flush
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results == {i: i * 10 for i in range(6)}
    assert batches[0] == [0]
    assert sorted(len(b) for b in batches[1:]) == [2, 3]  # max_batch 3: 5 queued -> 3 + 2
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_every_caller_of_a_failed_batch_raises_its_own_copy() -> None:
    release = threading.Event()
    calls = 0

    def flush(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            assert release.wait(10)
            return list(items)
        raise DatabaseUnavailable("database unavailable: gone")

    group: GroupCommit[int, int] = GroupCommit()
    errors: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            group.submit(i, flush)
        except DatabaseUnavailable as exc:
            errors.append(exc)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    while calls == 0:
        threading.Event().wait(0.001)
    others = [threading.Thread(target=submit, args=(i,)) for i in (1, 2)]
    for thread in others:
        thread.start()
    while len(group._pending) < 2:
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert len(errors) == 2 and errors[0] is not errors[1]
    assert all(str(e) == "database unavailable: gone" for e in errors)
    assert all(isinstance(e.__cause__, DatabaseUnavailable) for e in errors)


def test_a_flush_that_answers_the_wrong_count_fails_its_callers() -> None:
    group: GroupCommit[int, int] = GroupCommit()
    with pytest.raises(RuntimeError, match="flush returned 0 results for 1"):
        group.submit(1, lambda items: [])
