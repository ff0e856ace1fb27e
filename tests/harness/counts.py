"""What `streamq stats` counts: finished jobs in the per-minute counters."""

from __future__ import annotations

from redis.asyncio import Redis

from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys


async def jobs_counted(redis: Redis, keys: Keys, outcome: str | None = None) -> int:
    """Jobs counted with ``outcome`` (None: any) in this minute and the one before."""
    minute = await server_time_ms(redis) // 60_000
    buckets = [await redis.hgetall(keys.counters(m)) for m in (minute - 1, minute)]  # type: ignore[misc]
    wanted = b"jobs:" + (outcome or "").encode()
    return sum(
        int(n) for bucket in buckets for name, n in bucket.items()
        if (name == wanted if outcome else name.startswith(wanted))
    )  # fmt: skip
