"""Per-tenant limits, so one greedy tenant cannot starve the others: a request rate (a token
bucket) and how many responses that follow a job a tenant holds open at once.

Over either limit the answer is **429** with ``Retry-After``. Counts live in the gateway process
(nothing to clean up after a crash, no Redis round trip, and still in force while Redis is
down): behind N gateway processes a tenant gets up to N times each limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from streamq.gateway.config import GatewayConfig
from streamq.gateway.errors import ApiError

# A held response lasts as long as its job: a short wait is as good a guess as any.
STREAM_RETRY_AFTER = 5


@dataclass
class Bucket:
    """A tenant's request tokens, as of ``updated`` (``time.monotonic()``)."""

    tokens: float
    updated: float


class TenantLimits:
    """The rate and stream limits of :class:`GatewayConfig`, counted per tenant."""

    def __init__(self, config: GatewayConfig) -> None:
        self.rate = config.rate_limit
        self.burst = config.rate_burst
        self.max_streams = config.max_streams
        self._buckets: dict[str, Bucket] = {}
        self._streams: dict[str, int] = {}

    def admit(self, tenant: str) -> None:
        """Count one request of ``tenant``; a 429 :class:`ApiError` over its rate."""
        if self.rate is None:
            return
        now = time.monotonic()
        bucket = self._buckets.setdefault(tenant, Bucket(self.burst, now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        wait = math.ceil((1 - bucket.tokens) / self.rate)
        raise ApiError(
            429,
            "rate_limit_exceeded",
            f"over {self.rate:g} requests a second for this tenant "
            f"(STREAMQ_GATEWAY_RATE_LIMIT); retry after {wait}s",
            {"Retry-After": str(wait)},
        )

    @contextmanager
    def stream(self, tenant: str) -> Iterator[None]:
        """Hold one of ``tenant``'s streams while inside; a 429 :class:`ApiError` if all are."""
        held = self._streams.get(tenant, 0)
        if self.max_streams is not None and held >= self.max_streams:
            raise ApiError(
                429,
                "too_many_streams",
                f"this tenant already holds {held} open streams (STREAMQ_GATEWAY_MAX_STREAMS); "
                "close one, or retry later",
                {"Retry-After": str(STREAM_RETRY_AFTER)},
            )
        self._streams[tenant] = held + 1
        try:
            yield
        finally:
            self._streams[tenant] -= 1
            if not self._streams[tenant]:
                del self._streams[tenant]
