"""Redis clients with the timeouts a long-running worker needs.

Without a socket timeout a blackholed link hangs a client forever; without retries one
dropped connection fails a command that a reconnect would have served.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel as SyncSentinel
from redis.sentinel import SentinelConnectionPool as SyncSentinelPool
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

from streamq.core.redis_urls import CLUSTER_SCHEMES, SENTINEL_SCHEMES, SentinelURL, cluster_nodes

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 15


def pool_from_url(url: str, **overrides: Any) -> ConnectionPool:
    """A connection pool for ``url`` with timeouts, keep-alive and retries on dropped links.

    ``rediss://`` URLs check the server's host name; URL query parameters (``ssl_ca_certs``,
    ``socket_timeout``, ...) override these defaults.
    """
    options = pool_options(url, Retry, overrides)
    if url.startswith(SENTINEL_SCHEMES):
        return _with_hiredis_packing(_sentinel_pool(SentinelURL.parse(url), options))
    return _with_hiredis_packing(ConnectionPool.from_url(url, **options))


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis's C packer, as redis-py's sync connections already do when
    hiredis is installed: its asyncio ones still pack in Python (redis-py #4176), which took a
    quarter of a busy worker's CPU (the publisher's Lua calls carry every entry's fields)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if any(isinstance(arg, memoryview) for arg in args):  # redis-py sends those unjoined
            return super().pack_command(*args)
        # pack() annotates each argument as a list: it takes what pack_command takes.
        packed: list[bytes] = self._packer.pack(*cast(tuple[Any, ...], args))
        return packed


def _with_hiredis_packing(pool: ConnectionPool) -> ConnectionPool:
    """``pool``, its new connections packing commands with hiredis when it is installed."""
    base = pool.connection_class
    if HIREDIS_AVAILABLE and not issubclass(base, _HiredisPacking):
        pool.connection_class = type(base.__name__, (_HiredisPacking, base), {})
    return pool


def pool_options(
    url: str, retry: type[Retry] | type[SyncRetry], overrides: dict[str, Any]
) -> dict[str, Any]:
    """The options of :func:`pool_from_url`, for redis-py's async or sync ``Retry`` class."""
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if url.startswith("rediss://"):
        options["ssl_check_hostname"] = True
    return {**options, **overrides}


class _SentinelPool(SentinelConnectionPool):
    """redis-py's pool, which also closes its connections to the sentinels when it closes."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for client in self.sentinel_manager.sentinels:
            await client.aclose()


def _sentinel_pool(target: SentinelURL, options: dict[str, Any]) -> SentinelConnectionPool:
    """A pool that asks the sentinels for the current primary on every new connection, so
    connections dropped by a failover come back on the new primary."""
    sentinel_options = _sentinel_options(target, options)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    return _SentinelPool(target.service, sentinel, **_node_options(target, options))  # type: ignore[no-untyped-call]


def _sentinel_options(target: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "password": target.sentinel_password,
    }


def _node_options(target: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    credentials = {"username": target.username, "password": target.password}
    return {"db": target.db, "ssl": target.tls, **credentials, **options}


def streams_from_url(url: str) -> Redis:
    """The client for the job streams at ``url``: a Redis Cluster for ``redis+cluster://``.

    Typed as :class:`Redis`: streamq sends a cluster only commands whose keys share one
    job's hash tag, which it routes like a single Redis would serve them.
    """
    if not url.startswith(CLUSTER_SCHEMES):
        return redis_from_url(url)
    first, nodes = cluster_nodes(url)
    options = pool_options(first, Retry, {})
    options.pop("retry_on_error")
    options.pop("health_check_interval")
    cluster = RedisCluster.from_url(
        first, startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options
    )
    return cast(Redis, cluster)


def is_cluster(redis: object) -> bool:
    """Whether ``redis`` is a Redis Cluster client."""
    return isinstance(redis, RedisCluster)


def redis_from_url(url: str, **overrides: Any) -> Redis:
    """A client on :func:`pool_from_url` that closes its pool when closed."""
    return Redis.from_pool(pool_from_url(url, **overrides))


def sync_redis_from_url(url: str, **overrides: Any) -> redis.Redis:
    """A synchronous client with the same options, for ``streamq.sync``."""
    options = pool_options(url, SyncRetry, overrides)
    if url.startswith(SENTINEL_SCHEMES):
        target = SentinelURL.parse(url)
        sentinel_options = _sentinel_options(target, options)
        manager = SyncSentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
        sync_pool = SyncSentinelPool(target.service, manager, **_node_options(target, options))  # type: ignore[no-untyped-call]
        return redis.Redis.from_pool(sync_pool)
    return redis.Redis.from_pool(redis.ConnectionPool.from_url(url, **options))
