"""Shared fixtures: a real Redis, the simulator over real HTTP, and real arq workers.

Tests that start processes (workers, CLI runs, servers), a browser, a cluster or a fault
scenario, and the gateway's HTTP tests, are marked ``slow``: ``make test`` runs the rest
first, stopping at the first failure, then those.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.dev.simulator import SimulatorConfig, SimulatorThread
from streamq.worker.arq_worker import running_worker
from tests.harness.redis_servers import suite_redis_url

# Whole modules (or directories) of slow tests, relative to tests/; a test elsewhere that
# starts a process carries @pytest.mark.slow itself.
SLOW = (
    "compat/",
    "faults/test_faults.py",
    "gateway/",
    "test_acl_roles.py",
    "test_admission.py",
    "test_cli.py",
    "test_cluster.py",
    "test_examples.py",
    "test_metrics.py",
    "test_operations.py",
    "test_security.py",
    "test_sentinel.py",
    "test_workers.py",
)
TESTS = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--group",
        metavar="K/N",
        help="run every N-th test from the K-th on (N sessions at once share the suite)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # A shell starts a background command (make test's second session) with SIGINT ignored,
    # and every process it starts would inherit that: a CLI under test would shrug off its
    # Ctrl-C. A handler of our own is reset to the default in each child instead.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    group = config.getoption("group")
    if group:
        k, _, n = group.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise pytest.UsageError(f"--group {group}: want K/N with 1 <= K <= N")
        config.pluginmanager.register(_Group(int(k), int(n)), "streamq-test-group")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of the slow modules ``slow`` (before ``-m`` selects)."""
    for item in items:
        where = item.path.relative_to(TESTS).as_posix()
        if where.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


class _Group:
    """``--group K/N``: of the tests ``-m`` selected, every N-th from the K-th. Dealt out one
    by one rather than by module, so that the long modules are shared out too."""

    def __init__(self, k: int, n: int) -> None:
        self.k, self.n = k, n

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        mine = [t for i, t in enumerate(items) if i % self.n == self.k - 1]
        others = [t for i, t in enumerate(items) if i % self.n != self.k - 1]
        config.hook.pytest_deselected(items=others)
        items[:] = mine


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
