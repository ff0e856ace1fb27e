"""A gateway gives memory back once a crowd of event streams has left."""

from __future__ import annotations

import asyncio

from streamq.core.garbage_collection import release_free_pages
from streamq.gateway.memory import give_back_after_crowds
from tests.harness.waiting import poll_until


async def test_memory_is_given_back_once_a_crowd_has_left_and_not_before() -> None:
    """Open streams 10 (too few), 300 (a crowd), 100 (still a third), 50 (under a quarter):
    memory is given back once, at 50; then 60 is no new crowd."""
    counts = iter([10, 300, 100, 50, 60, 60, 60])
    seen: list[int] = []
    releases: list[int] = []

    def open_streams() -> int:
        seen.append(next(counts, 60))
        return seen[-1]

    def release() -> bool:
        releases.append(seen[-1])
        return release_free_pages()  # the real call: harmless, and it must not raise

    keeper = asyncio.create_task(give_back_after_crowds(open_streams, 0.01, 256, release))
    try:
        await poll_until(lambda: len(seen) >= 7, 5, "seven checks")
    finally:
        keeper.cancel()
    assert releases == [50]
