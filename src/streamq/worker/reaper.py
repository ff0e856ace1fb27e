"""Reaping: freeing the jobs of workers that died, so another worker runs them again.

An attempt whose lease ran out (its worker died or lost Redis) has arq's in-progress marker
deleted and its job queued again if arq dropped it; a job arq marked in progress whose worker
died before claiming it is freed after a whole lease. Either goes back to the front of the fair
order between tenants (it had waited its turn once). Every worker reaps; each lease is handled
on its own, so one job's unreadable data never stops the others being freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from arq.constants import expires_extra_ms
from redis.asyncio import Redis

from streamq.core import scripts
from streamq.core.clock import server_time_ms
from streamq.core.keys import (
    Keys,
    arq_in_progress_key,
    arq_job_key,
    check_job_id,
    fair_clock,
    fair_order,
)
from streamq.core.protocol import fair_requeue_call, lease_member, lease_parts
from streamq.core.queue import arq_job
from streamq.core.redis_errors import is_transient

logger = logging.getLogger("streamq.fleet")

REAP_BATCH = 100
FAIR_TTL = 86_400  # the fair order's TTL when it is written here (STREAMQ_STREAM_TTL's default)


class Reaper:
    """Frees lost jobs; ``runs`` are this process's own (never reaped here)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        lease_ms: int,
        arq_id: Callable[[str], str],
        queue_name: str,
        runs: Mapping[str, Any],
        streams: Redis | None = None,
        fair_ttl: int = FAIR_TTL,
    ) -> None:
        self._redis = redis
        self._streams = redis if streams is None else streams  # where the job states live
        self._keys = keys
        self._lease_ms = lease_ms
        self._arq_id = arq_id
        self._queue_name = queue_name
        self.runs = runs
        self._suspects: dict[str, float] = {}  # job id -> when first seen stranded
        self._reap = redis.register_script(scripts.REAP)
        self._requeue = redis.register_script(scripts.FAIR_REQUEUE)
        self._fair_ttl = fair_ttl
        self._fair_keys = [fair_order(queue_name), fair_clock(queue_name)]

    async def reap_lost(self) -> None:
        """One round: expired leases, then jobs stranded before their first claim."""
        await self._reap_expired()
        await self._reap_stranded(self._queue_name)

    async def _reap_stranded(self, queue_name: str) -> None:
        """Free jobs arq marked in progress whose worker died before it claimed them.

        Such a job holds arq's in-progress marker but no lease; left alone it would wait for
        arq's own timeout. A job seen like that for a whole lease is freed like a lost one.
        """
        now = asyncio.get_running_loop().time()
        oldest = await self._redis.zrangebyscore(
            queue_name,
            "-inf",
            f"({await self._server_ms() - self._lease_ms}",
            start=0,
            num=REAP_BATCH,
        )
        stranded: set[str] = set()
        for raw in oldest:
            arq_id = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:
                job_id = self._keys.job_id_from_arq(arq_id)
            except ValueError:
                continue
            async with _one_job(f"checking stranded job {job_id}"):
                await self._check_stranded(job_id, arq_id, now, stranded)
        self._suspects = {k: v for k, v in self._suspects.items() if k in stranded}

    async def _check_stranded(
        self, job_id: str, arq_id: str, now: float, stranded: set[str]
    ) -> None:
        in_progress = arq_in_progress_key(arq_id)
        if job_id in self.runs or not await self._redis.exists(in_progress):
            return
        attempt, terminal = await self._state(job_id)
        if terminal:
            return
        member = lease_member(attempt, job_id)
        if attempt and await self._redis.zscore(self._keys.running(), member) is not None:
            return
        stranded.add(job_id)
        first_seen = self._suspects.setdefault(job_id, now)
        if now - first_seen >= self._lease_ms / 1000:
            await self._redis.delete(in_progress)
            keys, args = fair_requeue_call(self._queue_name, self._fair_ttl, arq_id)
            await self._requeue(keys=keys, args=args)
            logger.warning("job %s was stranded before its first claim; freed again", job_id)

    async def _reap_expired(self) -> None:
        expired = await self._redis.zrangebyscore(
            self._keys.running(), "-inf", f"({await self._server_ms()}", start=0, num=REAP_BATCH
        )
        for raw in expired:
            member = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:
                await self._reap_member(member)
            except Exception as exc:  # its job's data is bad: drop the lease, not the round
                if is_transient(exc):
                    raise
                logger.error("dropping the unusable lease %r: %r", member, exc)
                await self._redis.zrem(self._keys.running(), member)

    async def _reap_member(self, member: str) -> None:
        attempt, job_id = lease_parts(member)
        check_job_id(job_id)
        arq_id = self._arq_id(job_id)
        current, terminal = await self._state(job_id)
        keys = [
            self._keys.running(),
            arq_in_progress_key(arq_id),
            arq_job_key(arq_id),
            self._queue_name,
            *self._fair_keys,
        ]
        now = int(time.time() * 1000)
        args: list[str | bytes | int] = [
            member,
            attempt,
            arq_id,
            arq_job(now),
            expires_extra_ms,
            current,
            "1" if terminal else "",
            self._fair_ttl,
        ]
        if await self._reap(keys=keys, args=args):
            logger.warning("job %s attempt %s lost its worker; freed for a retry", job_id, attempt)

    async def _state(self, job_id: str) -> tuple[int, bool]:
        """The job's current attempt and whether it has ended, from its stream's state."""
        attempt, terminal = await self._streams.hmget(  # type: ignore[misc]
            self._keys.state(job_id), ["attempt", "terminal"]
        )
        return int(attempt or 0), terminal is not None

    async def _server_ms(self) -> int:
        return await server_time_ms(self._redis)


@contextlib.asynccontextmanager
async def _one_job(doing: str) -> AsyncIterator[None]:
    """Let one job's bad data fail only its own step of a round over many jobs; a lost link
    ends the round (the next one tries again)."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.error("%s failed: %r", doing, exc)
