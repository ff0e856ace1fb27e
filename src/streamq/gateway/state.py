"""What every endpoint shares: settings, the Redis client, the producer, auth, tenancy and
limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from starlette.requests import Request

from streamq.client import StreamQ
from streamq.core.connections import pool_options, redis_from_url, streams_from_url
from streamq.core.keys import Keys
from streamq.core.redis_urls import SENTINEL_SCHEMES
from streamq.core.settings import Settings
from streamq.gateway.auth import Authenticator
from streamq.gateway.config import GatewayConfig
from streamq.gateway.fanout import Feed
from streamq.gateway.limits import TenantLimits
from streamq.gateway.tenancy import TenantJobs
from streamq.job import ChatJob
from streamq.multiplexer import MAX_BACKLOG, Multiplexer
from streamq.responses.store import ResponseStore

TENANT_KEY = "streamq.tenant"  # in the ASGI scope, once the request is authenticated


# Connections of the gateway's own pool (the multiplexer reads on two more): a burst of
# requests waits for one instead of opening hundreds, so the gateway holds a few, always.
POOL_CONNECTIONS = 6
POOL_WAIT = 20.0  # seconds a command waits for a free connection before it fails


def _bounded_client(url: str) -> Redis:
    if url.startswith(SENTINEL_SCHEMES):
        return redis_from_url(url)  # the sentinel pool finds the primary per connection
    options = pool_options(url, Retry, {"max_connections": POOL_CONNECTIONS, "timeout": POOL_WAIT})
    return Redis.from_pool(BlockingConnectionPool.from_url(url, **options))


class Gateway:
    """The gateway's shared state. Its Redis client opens on first use (so an app mounted
    inside another, whose lifespan never reaches it, works too) and closes with the lifespan."""

    def __init__(
        self, settings: Settings, config: GatewayConfig, redis: Redis | None = None
    ) -> None:
        self.settings = settings
        self.config = config
        self.keys = Keys(settings.key_prefix)
        self.auth = Authenticator(config)
        self.limits = TenantLimits(config)
        self._redis = redis
        self._owns_redis = redis is None
        self._tenants: TenantJobs | None = None
        self._sq: StreamQ | None = None
        self._responses: ResponseStore | None = None
        self._streams: Redis | None = None  # STREAMQ_STREAMS_URL's, when it is set
        self._mux: Multiplexer | None = None  # follows every job a response follows
        # Entries that may wait for one response before it is dropped back to Redis.
        self.max_backlog = MAX_BACKLOG
        self._lock = asyncio.Lock()

    async def tenants(self) -> TenantJobs:
        """Enqueueing and lookup for tenants, on a connected client."""
        if self._tenants is None:
            async with self._lock:
                if self._tenants is None:
                    redis = self._redis or _bounded_client(self.settings.redis_url)
                    self._redis = redis
                    self._sq = StreamQ(redis, self.settings)
                    self._tenants = TenantJobs(redis, self._sq, self.settings)
        return self._tenants

    async def responses(self) -> ResponseStore:
        """The stored responses of ``/v1/responses``, on a connected client."""
        if self._responses is None:
            redis = await self.redis()
            url = self.settings.streams_url
            if url is not None and self._streams is None:
                self._streams = streams_from_url(url)
            self._responses = ResponseStore(redis, self.settings, self._streams)
        return self._responses

    async def feed(self, job: ChatJob, after: str | None = None, *, queued: bool = True) -> Feed:
        """``job``'s events after cursor ``after``, from the gateway's one multiplexer; not
        started yet (:meth:`Feed.start`). ``queued``: with its place while it waits in the
        queue (``queued`` events without a cursor)."""
        redis = await self.redis()
        if self._mux is None:
            if self.settings.streams_url is not None and self._streams is None:
                self._streams = streams_from_url(self.settings.streams_url)
            self._mux = Multiplexer(
                redis,
                self.keys,
                read_timeout=self.settings.read_timeout,
                streams=self._streams,
                max_backlog=self.max_backlog,
                control_connections=POOL_CONNECTIONS - 2,  # a burst of joins, in parallel
                queue_name=self.settings.queue_name,
            )
            await self._mux.__aenter__()
        return Feed(self._mux.subscribe(job.id, after, queued=queued))

    @property
    def subscribers(self) -> int:
        """How many responses follow a job now."""
        return 0 if self._mux is None else self._mux.subscribers

    @property
    def dropped(self) -> int:
        """How often a response fell too far behind and was dropped back to Redis."""
        return 0 if self._mux is None else self._mux.dropped

    @property
    def written_directly(self) -> int:
        """How many batches of entries went straight to a waiting response's connection
        (:mod:`streamq.gateway.direct_write`)."""
        return 0 if self._mux is None else self._mux.written_directly

    async def redis(self) -> Redis:
        """The gateway's Redis client."""
        await self.tenants()
        assert self._redis is not None
        return self._redis

    def tenant(self, request: Request) -> str:
        """The caller's tenant (401 without a valid token, 429 over its request rate); the
        request counts against the rate once, however often this is asked."""
        tenant: str | None = request.scope.get(TENANT_KEY)
        if tenant is None:
            tenant = self.auth.tenant(request)
            self.limits.admit(tenant)
            request.scope[TENANT_KEY] = tenant
        return tenant

    async def aclose(self) -> None:
        """Close the Redis clients the gateway opened (the streams' own, with STREAMS_URL)."""
        self._responses = None
        if self._mux is not None:
            await self._mux.aclose()
            self._mux = None
        if self._streams is not None:
            await self._streams.aclose()
            self._streams = None
        if self._sq is not None:
            await self._sq.aclose()  # closes only what it opened itself
            self._sq, self._tenants = None, None
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis, self._tenants = None, None

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Starlette lifespan: release the connection pool at shutdown."""
        try:
            yield
        finally:
            await self.aclose()
