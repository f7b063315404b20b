"""Send lanes: each adapter's own threads and deadline (no database)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chimeway.engine.senders import Lane, Senders

FAST = Lane("fast", "fast", capacity=4, timeout=30)


@pytest.fixture
def senders() -> Iterator[Senders]:
    s = Senders()
    yield s
    s.close()


def test_every_item_comes_back_once_with_its_result(senders: Senders) -> None:
    groups = list(
        senders.run(
            [1, 2, 3, 4, 5],
            lambda x: x * 2,
            lambda _: FAST,
            lambda x, _: -x,
            lambda x, _: 0,
            every=1.0,
        )
    )
    assert sorted(pair for group in groups for pair in group) == [
        (1, 2),
        (2, 4),
        (3, 6),
        (4, 8),
        (5, 10),
    ]


def test_a_lane_runs_at_most_its_capacity_at_once(senders: Senders) -> None:
    lane = Lane("narrow", "narrow", capacity=2, timeout=30)
    lock = threading.Lock()
    running, most = 0, 0
    gate = threading.Barrier(2, timeout=5)

    def send(_: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait()  # two run together, never a third (it would wait for a partner)
        with lock:
            running -= 1
        return 0

    results = [
        pair
        for group in senders.run(
            range(6), send, lambda _: lane, lambda *_: 1, lambda *_: 2, every=1.0
        )
        for pair in group
    ]
    assert len(results) == 6 and most == 2


def test_a_hung_lane_does_not_hold_back_another(senders: Senders) -> None:
    hung = Lane("hung", "hung", capacity=1, timeout=0.3)
    release = threading.Event()

    def send(item: str) -> str:
        if item == "stuck":
            release.wait(30)
        return "sent"

    groups = senders.run(
        ["stuck", "a", "b"],
        send,
        lambda item: hung if item == "stuck" else FAST,
        lambda item, lane: f"gave up on {item} after {lane.timeout}",
        lambda item, lane: f"never started {item}",
        every=0.05,
    )
    first = next(groups)
    # The healthy lane's sends come back before the hung one is given up.
    assert sorted(first) == [("a", "sent"), ("b", "sent")]
    # Given up at its deadline while the call still hangs (it is released only afterwards).
    assert list(groups) == [[("stuck", "gave up on stuck after 0.3")]]
    assert not release.is_set()
    release.set()


def test_a_send_that_never_got_a_thread_is_not_made(senders: Senders) -> None:
    lane = Lane("one", "one", capacity=1, timeout=0.2)
    release = threading.Event()
    calls: list[str] = []

    def send(item: str) -> str:
        calls.append(item)
        release.wait(30)
        return "sent"

    results = dict(
        pair
        for group in senders.run(
            ["first", "second"],
            send,
            lambda _: lane,
            lambda item, _: "timed out",
            lambda item, _: "never started",
            every=0.05,
        )
        for pair in group
    )
    assert results == {"first": "timed out", "second": "never started"}
    assert calls == ["first"]  # the second was never handed to the adapter
    release.set()


def test_a_busy_healthy_lane_keeps_its_queue_waiting_past_the_deadline(
    senders: Senders,
) -> None:
    """Each call answers within the deadline, but the queue behind one thread takes longer
    than a deadline to drain: queueing is no failure of the provider, every item is sent."""
    lane = Lane("slow", "slow", capacity=1, timeout=0.3)
    calls: list[int] = []

    def send(item: int) -> str:
        calls.append(item)
        threading.Event().wait(0.1)  # a slow but healthy provider
        return "sent"

    results = dict(
        pair
        for group in senders.run(
            range(6),
            send,
            lambda _: lane,
            lambda *_: "timed out",
            lambda *_: "never started",
            every=0.05,
        )
        for pair in group
    )
    assert results == dict.fromkeys(range(6), "sent")
    assert sorted(calls) == list(range(6))
