"""A gateway gives memory back once a crowd of event streams has left, letting go of the
frames it kept first."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from streamq.core import metrics
from streamq.core.events import Delta, Event
from streamq.core.garbage_collection import release_free_pages
from streamq.gateway import sse
from streamq.gateway.memory import give_back_after_crowds
from tests.harness.waiting import poll_until


async def test_memory_is_given_back_once_a_crowd_has_left_and_not_before() -> None:
    """Open connections 10 (too few), 300 (a crowd), 100 (still a third), 50 (under a quarter):
    memory is given back once, at 50, caches forgotten first; then 60 is no new crowd."""
    counts = iter([10, 300, 100, 50, 60, 60, 60])
    seen: list[int] = []
    steps: list[tuple[str, int]] = []

    def open_connections() -> int:
        seen.append(next(counts, 60))
        return seen[-1]

    def release() -> bool:
        steps.append(("release", seen[-1]))
        return release_free_pages()  # the real call: harmless, and it must not raise

    def forget() -> None:
        steps.append(("forget", seen[-1]))

    keeper = asyncio.create_task(
        give_back_after_crowds(open_connections, 0.01, 256, release, forget)
    )
    try:
        await poll_until(lambda: len(seen) >= 7, 5, "seven checks")
    finally:
        keeper.cancel()
    assert steps == [("forget", 50), ("release", 50)]


async def test_forgetting_frames_lets_go_of_every_entry_and_keeps_the_lag_counted() -> None:
    """`forget_frames` drops the frames kept by entry and the latest batch, after observing the
    lag of the responses that batch was handed to; framed again, a batch is the same bytes."""
    metrics.enable()
    batch: list[Event] = [
        Delta(text="kept", cursor="1700000000000-0"),
        Delta(text="then let go", cursor="1700000000000-1"),
    ]
    data, chunk = sse._framed(batch)
    lag_count = REGISTRY.get_sample_value("streamq_reader_lag_seconds_count") or 0
    for _ in range(3):  # three more responses in this turn of the loop: observed at its end
        assert sse._framed(batch) == (data, chunk)
    assert REGISTRY.get_sample_value("streamq_reader_lag_seconds_count") == lag_count
    assert all(id(event) in sse._FRAMES for event in batch)
    sse.forget_frames()
    assert sse._FRAMES == {}
    counted = REGISTRY.get_sample_value("streamq_reader_lag_seconds_count")
    assert counted == lag_count + 3 * len(batch)
    assert sse._framed(batch) == (data, chunk)  # framed anew: a new first response
    assert REGISTRY.get_sample_value("streamq_reader_lag_seconds_count") == counted + 2
