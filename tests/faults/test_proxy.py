"""The fault proxy itself: it forwards, blackholes (held or dropped), resets and refuses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamq.dev.local_redis import LocalRedis
from tests.faults.proxy import FaultProxy
from tests.harness.waiting import poll_until

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def target() -> Iterator[LocalRedis]:
    """A redis-server of this module's own to proxy to."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
def proxy(target: LocalRedis) -> Iterator[FaultProxy]:
    """A proxy in front of the module's Redis."""
    with FaultProxy(target.port) as proxy:
        yield proxy


@pytest.fixture
async def client(proxy: FaultProxy) -> AsyncIterator[Redis]:
    """A client through the proxy, with a short socket timeout and no retries."""
    async with Redis.from_url(proxy.url(), socket_timeout=0.5, retry_on_error=[]) as client:
        yield client


async def test_forwards_both_ways(client: Redis, proxy: FaultProxy) -> None:
    """Commands and replies pass through unchanged."""
    assert await client.echo("x" * 200_000) == b"x" * 200_000
    assert proxy.stats.accepted == 1
    assert proxy.open_connections == 1


async def test_a_held_blackhole_delivers_on_heal(client: Redis, proxy: FaultProxy) -> None:
    """Blackholed bytes wait, like TCP across a partition, and arrive once healed."""
    assert await client.ping()
    proxy.blackhole()
    pending = asyncio.ensure_future(client.ping())
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done
    proxy.heal()
    assert await pending is True  # redis-py parses +PONG as True


async def test_a_dropping_blackhole_leaves_used_connections_dead(
    client: Redis, proxy: FaultProxy
) -> None:
    """Dropped bytes are gone: that connection times out even after heal; new ones work."""
    assert await client.ping()
    proxy.blackhole(drop=True)
    with pytest.raises(RedisTimeoutError):
        await client.ping()
    proxy.heal()
    assert proxy.stats.dropped_bytes > 0
    async with Redis.from_url(proxy.url(), socket_timeout=0.5) as fresh:
        assert await fresh.ping()


async def test_new_connections_are_accepted_but_silent_in_a_blackhole(
    proxy: FaultProxy,
) -> None:
    """A blackhole accepts connections but answers nothing on them."""
    proxy.blackhole(drop=True)
    reader, writer = await asyncio.open_connection(*proxy.address)
    writer.write(b"PING\r\n")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    writer.close()
    await writer.wait_closed()
    proxy.heal()


async def test_reset_all_sends_rst(proxy: FaultProxy) -> None:
    """Every open connection is aborted: a command waiting on one fails at once."""
    reader, writer = await asyncio.open_connection(*proxy.address)
    writer.write(b"PING\r\n")
    assert await reader.readline() == b"+PONG\r\n"
    async with Redis.from_url(proxy.url(), socket_timeout=5, retry_on_error=[]) as client:
        assert await client.ping()
        forwarded = proxy.stats.forwarded_bytes
        waiting = asyncio.ensure_future(client.xread({"fault-proxy-nothing": "$"}, block=3000))
        await poll_until(lambda: proxy.stats.forwarded_bytes > forwarded, 5, "the XREAD sent")
        assert proxy.reset_all() == 2
        with pytest.raises(ConnectionResetError):
            await reader.read(1)
        writer.close()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(waiting, 1)
        assert await client.ping()  # a new connection
    assert proxy.stats.resets == 2


async def test_refuse_closes_and_reopens_the_listener(client: Redis, proxy: FaultProxy) -> None:
    """While refusing, connects fail at once but open connections live on; then it listens."""
    assert await client.ping()
    proxy.refuse(True)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*proxy.address)
    assert await client.ping()  # the existing connection
    proxy.refuse(False)
    async with Redis.from_url(proxy.url(), socket_timeout=0.5) as fresh:
        assert await fresh.ping()


async def test_silence_after_lets_the_command_through_but_loses_its_reply(
    client: Redis, proxy: FaultProxy, target: LocalRedis
) -> None:
    """The marked command runs on the target; its reply never comes back on that link."""
    assert await client.ping()
    proxy.silence_after(b"fault-proxy-marker")
    assert proxy.silence_armed
    with pytest.raises(RedisTimeoutError):
        await client.set("fault-proxy-marker", "ran")
    assert not proxy.silence_armed
    async with Redis.from_url(target.url) as direct:
        assert await direct.getdel("fault-proxy-marker") == b"ran"


async def test_a_dead_target_resets_new_connections() -> None:
    """With nothing listening behind it, the proxy resets each client at once."""
    with LocalRedis() as gone:
        port = gone.port
    with FaultProxy(port) as proxy:
        async with Redis.from_url(proxy.url(), socket_timeout=2, retry_on_error=[]) as client:
            with pytest.raises(RedisConnectionError):
                await client.ping()
        assert proxy.stats.upstream_failures >= 1


def test_stop_closes_everything_and_ends_the_thread(target: LocalRedis) -> None:
    """On exit no thread and no connection is left (warnings are errors in this suite)."""
    before = threading.active_count()
    with FaultProxy(target.port) as proxy:
        import redis

        client = redis.Redis.from_url(proxy.url(), socket_timeout=1)
        assert client.ping()
        proxy.blackhole()
    assert threading.active_count() == before
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()
    with pytest.raises(RuntimeError):
        proxy.heal()
