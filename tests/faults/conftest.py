"""Fixtures of the fault suite: a Redis of its own, the fault proxy, the simulator, 3 workers.

The workers reach Redis only through the proxy; the test's producer and its checks talk to
Redis directly. Readers use the proxy in the scenarios that break the link or Redis itself.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.core.connections import redis_from_url
from streamq.core.keys import Keys
from streamq.dev.simulator import SimulatorConfig, SimulatorThread
from tests.faults.jobs import Readers, by_mode
from tests.faults.proxy import FaultProxy
from tests.harness.processes import WorkerPool, settings_environment
from tests.harness.redis_servers import RestartableRedis

WORKERS = 3
LEASE = 2.0
DRAIN_TIMEOUT = 2
MAX_ATTEMPTS = 10
RETRY_DELAY = 0.1
MAX_RETRY_DELAY = 0.5
READ_TIMEOUT = 30.0
# A worker still running this long after SIGTERM is hung. It drains for DRAIN_TIMEOUT, then
# closes down in well under a second on an idle machine; a loaded one can take many times that,
# so this bounds a hang rather than timing the exit (the summary prints how long exits took).
EXIT_TIMEOUT = DRAIN_TIMEOUT + 60.0
# Longest a job's readers may take in all before the job counts as hung.
JOB_DEADLINE: float = by_mode(60, 200)


@dataclass
class Cluster:
    """Everything one scenario runs on."""

    redis: RestartableRedis
    proxy: FaultProxy
    simulator: SimulatorThread
    settings: Settings  # as the workers see it: Redis through the proxy
    pool: WorkerPool
    direct: Redis  # straight to Redis: the producer and the checks
    keys: Keys
    _clients: list[Redis] = field(default_factory=list)

    @property
    def direct_settings(self) -> Settings:
        """The settings with Redis reached directly."""
        return self.settings.replace(redis_url=self.redis.url)

    def streamq(self, *, through_proxy: bool) -> StreamQ:
        """A client on a resilient pool (timeouts, retries), closed with the cluster."""
        settings = self.settings if through_proxy else self.direct_settings
        client = redis_from_url(settings.redis_url)
        self._clients.append(client)
        return StreamQ(client, settings)

    def readers(self, *, through_proxy: bool = False, deadline: float = JOB_DEADLINE) -> Readers:
        """Enqueue directly; read through the proxy when asked."""
        producer = StreamQ(self.direct, self.direct_settings)
        reader = self.streamq(through_proxy=through_proxy)
        return Readers(producer, reader, read_timeout=READ_TIMEOUT, deadline=deadline)

    def stop_workers(self) -> list[str]:
        """SIGTERM every live worker; describe those that did not exit in time (hung)."""
        hung = self.pool.stop_all(EXIT_TIMEOUT)
        return [f"worker pid {p.pid} still running {EXIT_TIMEOUT:g}s after SIGTERM" for p in hung]

    async def aclose(self) -> None:
        """Close the clients made by :meth:`streamq`."""
        for client in self._clients:
            await client.aclose()
        self._clients.clear()


def worker_env() -> dict[str, str]:
    """The fault suite's worker settings: short lease and drain, many attempts, quick retries."""
    return {
        "STREAMQ_LEASE": str(LEASE),
        "STREAMQ_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
        "STREAMQ_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "STREAMQ_RETRY_DELAY": str(RETRY_DELAY),
        "STREAMQ_MAX_RETRY_DELAY": str(MAX_RETRY_DELAY),
        "STREAMQ_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def fault_simulator() -> Iterator[SimulatorThread]:
    """A simulator of the test's own, so its counters are the test's alone."""
    with SimulatorThread(SimulatorConfig()) as simulator:
        yield simulator


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, simulator: SimulatorThread, *, appendonly: bool
) -> AsyncIterator[Cluster]:
    """Redis (own process), the proxy before it, and 3 workers connected through the proxy."""
    redis = RestartableRedis(tmp_path / "redis", appendonly=appendonly).start()
    try:
        with FaultProxy(redis.port) as proxy:
            scope = f"faults-{uuid.uuid4().hex[:8]}"
            settings = Settings(
                redis_url=proxy.url(),
                openai_api_key="sk-test-not-a-real-key",
                openai_base_url=simulator.base_url,
                openai_model="sim-model",
                queue_name=f"{scope}:queue",
                key_prefix=scope,
                poll_interval=0.05,
                read_timeout=READ_TIMEOUT,
                lease=LEASE,
                drain_timeout=DRAIN_TIMEOUT,
                max_attempts=MAX_ATTEMPTS,
                retry_delay=RETRY_DELAY,
                max_retry_delay=MAX_RETRY_DELAY,
            )
            environment = {**settings_environment(settings), **worker_env()}
            pool = WorkerPool(environment, tmp_path / "workers")
            async with Redis.from_url(redis.url) as direct:
                cluster = Cluster(redis, proxy, simulator, settings, pool, direct, Keys(scope))
                try:
                    pool.spawn(WORKERS)
                    await pool.wait_serving()  # each has its signal handlers: SIGTERM drains
                    yield cluster
                finally:
                    pool.stop_all(EXIT_TIMEOUT)  # a backstop: each test checks this itself
                    await cluster.aclose()
    finally:
        redis.stop()


@pytest.fixture
async def cluster(tmp_path: Path, fault_simulator: SimulatorThread) -> AsyncIterator[Cluster]:
    """A cluster on a Redis without persistence."""
    async with running_cluster(tmp_path, fault_simulator, appendonly=False) as cluster:
        yield cluster


@pytest.fixture
async def aof_cluster(tmp_path: Path, fault_simulator: SimulatorThread) -> AsyncIterator[Cluster]:
    """A cluster on a Redis with an append-only file fsynced on every write."""
    async with running_cluster(tmp_path, fault_simulator, appendonly=True) as cluster:
        yield cluster
