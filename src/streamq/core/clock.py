"""The fleet's clock: Redis's ``TIME``, which every worker reads the same, whatever its own."""

from __future__ import annotations

from redis.asyncio import Redis


async def server_time_ms(redis: Redis) -> int:
    """Redis's clock in milliseconds: the one clock all workers agree on."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000
