"""Shared fixtures: a real Redis, the simulator over real HTTP, and real arq workers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_lib
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.simulator import SimulatorConfig, SimulatorThread
from streamq.worker import running_worker
from tests.harness.redis_servers import suite_redis_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when it answers, else a redis-server of our own on a free port."""
    with suite_redis_url() as url:
        yield url


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorThread]:
    """The OpenAI-compatible simulator, serving real HTTP on a free port."""
    with SimulatorThread(SimulatorConfig()) as sim:
        yield sim


@pytest.fixture
def settings(redis_url: str, simulator: SimulatorThread) -> Iterator[Settings]:
    """Settings with a key prefix and queue of this test's own; only those keys are deleted."""
    scope = f"streamq-test-{uuid.uuid4().hex[:12]}"
    yield Settings(
        redis_url=redis_url,
        openai_api_key="sk-test-not-a-real-key",
        openai_base_url=simulator.base_url,
        openai_model="sim-model",
        queue_name=f"{scope}:queue",
        key_prefix=scope,
        poll_interval=0.01,
        read_timeout=30,
    )
    with redis_lib.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{scope}*", count=1000))
        for queue in (k for k in keys if client.type(k) == b"zset"):
            for job_id in client.zrange(queue, 0, -1):  # jobs no worker took: arq's own keys
                keys += [b"arq:job:" + job_id, b"arq:retry:" + job_id]
        if keys:
            client.delete(*keys)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """An async client for the test's Redis."""
    async with Redis.from_url(settings.redis_url) as client:
        yield client


@pytest.fixture
async def sq(settings: Settings, redis: Redis) -> AsyncIterator[StreamQ]:
    """A producer client for the test's settings."""
    async with StreamQ(redis, settings) as client:
        yield client


@pytest.fixture
async def worker(settings: Settings, redis: Redis) -> AsyncIterator[None]:
    """An arq worker running in this test's event loop."""
    async with running_worker(settings):
        yield
