"""Memory given back after a crowd of event streams has left a gateway process.

Each open event stream costs ~27 KB (uvicorn's connection, Starlette's request, the response
and its disconnect watcher, the multiplexer's follower). Once the connections open fall to a
quarter of their peak (of at least :data:`CROWD`), the gateway collects and asks the C
allocator to return its free pages (`streamq serve` only: an app that mounts the gateway keeps
its own memory policy). Connections, not the streams followed: a stream ends with its job while
its client may hold the connection, and its memory, for a while longer.

That works because `streamq serve` runs on the C allocator
(:func:`~streamq.core.garbage_collection.restart_on_c_allocator`). On CPython's own, after
2,000 streams had left, 40-230 KB of objects made while they were there (a counter's new
value, a cache entry) held 30-37 of its 1 MiB arenas, and RSS stayed ~40 MiB above where it
started; on the C allocator, ~4 MiB (benchmarks/results/fanout.md).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from streamq.core.garbage_collection import release_free_pages

CHECK_SECONDS = 5.0
CROWD = 256  # open connections worth giving memory back after


async def give_back_after_crowds(
    open_connections: Callable[[], int],
    every: float = CHECK_SECONDS,
    crowd: int = CROWD,
    release: Callable[[], bool] = release_free_pages,
    forget: Callable[[], None] = lambda: None,
) -> None:
    """Every ``every`` seconds, forever: give memory back (``forget`` caches, a collection,
    then ``release`` in a thread) once ``open_connections()`` fell to a quarter of a peak of
    at least ``crowd`` since the last time."""
    peak = 0
    while True:
        await asyncio.sleep(every)
        now = open_connections()
        peak = max(peak, now)
        if peak >= crowd and now <= peak // 4:
            forget()
            gc.collect()
            await asyncio.to_thread(release)
            peak = now
