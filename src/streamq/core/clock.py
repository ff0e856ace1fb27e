"""The fleet's clock: Redis's ``TIME``, which every worker reads the same, whatever its own."""

from __future__ import annotations

import time

from redis.asyncio import Redis


async def server_time_ms(redis: Redis) -> int:
    """Redis's clock in milliseconds: the one clock all workers agree on."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


class ServerClock:
    """Redis's clock without a round trip each time: read again after ``refresh`` seconds and
    carried forward on this process's monotonic clock meanwhile (whatever its wall clock does)."""

    def __init__(self, redis: Redis, refresh: float = 60.0) -> None:
        self._redis = redis
        self._refresh = refresh
        self._read: tuple[int, float] | None = None  # Redis's ms, and time.monotonic(), then

    async def now_ms(self) -> int:
        """Redis's clock in milliseconds, as :func:`server_time_ms` would read it now."""
        now = time.monotonic()
        if self._read is None or now - self._read[1] >= self._refresh:
            self._read = (await server_time_ms(self._redis), time.monotonic())
            return self._read[0]
        server_ms, at = self._read
        return server_ms + int((now - at) * 1000)
