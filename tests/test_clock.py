"""Redis's clock as the fleet reads it: on every call, or carried on between reads."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from streamq.core.clock import ServerClock, server_time_ms
from streamq.core.connections import redis_from_url
from streamq.dev.local_redis import LocalRedis


async def test_a_fresh_read_is_redis_own_time(redis: Redis) -> None:
    """Read every time (no carrying), the clock tells what Redis's ``TIME`` tells."""
    clock = ServerClock(redis, refresh=0)
    before = await server_time_ms(redis)
    now = await clock.now_ms()
    after = await server_time_ms(redis)
    assert before <= now <= after


async def test_between_reads_the_clock_needs_no_round_trip() -> None:
    """Once read, the clock goes on without Redis until ``refresh`` has passed: it still tells
    the time with its Redis gone, and no earlier than it did."""
    with LocalRedis() as server:
        redis = redis_from_url(server.url)
        carried, every_time = ServerClock(redis, refresh=3600), ServerClock(redis, refresh=0)
        first = await carried.now_ms()
        await every_time.now_ms()
    try:
        assert await carried.now_ms() >= first
        with pytest.raises((RedisConnectionError, OSError)):
            await every_time.now_ms()
    finally:
        await redis.aclose()
