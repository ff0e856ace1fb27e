"""Memory given back after a crowd of event streams has left a gateway process.

Each open event stream costs ~28 KB (uvicorn's connection, Starlette's request, the response
and its disconnect watcher, the multiplexer's follower). When 2,000 of them closed, CPython
freed the objects but the process kept the pages: RSS stayed ~65 MiB above where it started
(~45 MiB now that a collection and ``malloc_trim`` follow the crowd's leaving). Once the
streams open fall to a quarter of their peak (of at least :data:`CROWD`), the gateway collects
and asks the C allocator to return its free pages (`streamq serve` only: an app that mounts the
gateway keeps its own memory policy).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from streamq.core.garbage_collection import release_free_pages

CHECK_SECONDS = 5.0
CROWD = 256  # open streams worth giving memory back after


async def give_back_after_crowds(
    open_streams: Callable[[], int],
    every: float = CHECK_SECONDS,
    crowd: int = CROWD,
    release: Callable[[], bool] = release_free_pages,
) -> None:
    """Every ``every`` seconds, forever: give memory back (a collection, then ``release`` in a
    thread) once ``open_streams()`` fell to a quarter of a peak of at least ``crowd`` since the
    last time."""
    peak = 0
    while True:
        await asyncio.sleep(every)
        now = open_streams()
        peak = max(peak, now)
        if peak >= crowd and now <= peak // 4:
            gc.collect()
            await asyncio.to_thread(release)
            peak = now
