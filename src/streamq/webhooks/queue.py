"""The durable deliveries: a sorted set of due job ids and one record hash per job, in the
queue's Redis, so a delivery outlives the worker that registered it (and, with AOF, Redis).

A worker *claims* due deliveries by pushing them a visibility timeout into the future: should
it die, they come due again for any worker. Every later move checks the claim is still the
one it made (the score), so a job that ended meanwhile is never pushed back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

from streamq.core.keys import Keys
from streamq.core.settings import Settings

# KEYS: due set, record. ARGV: job id, delay (ms), ttl (s). -> 1 registered, 0 already finished.
# A new delivery is due after the delay; a pending one only moves later (GT), never sooner.
REGISTER = """
if redis.call('HEXISTS', KEYS[2], 'finished') == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[2], 'registered', now)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: due set. ARGV: delay (ms), job ids. Pending deliveries of jobs running here move to
# the delay from now (never sooner): while the worker lives, they do not come due.
RENEW = """
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', 'GT', due, ARGV[i]) end
return 1
"""
# KEYS: due set. ARGV: most to take, visibility (ms). -> {claim score, job ids}.
CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local until_ms = now + tonumber(ARGV[2])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], until_ms, id) end
return {until_ms, due}
"""
# KEYS: due set. ARGV: job id, claim score, delay (ms). -> 1 moved, 0 no longer our claim.
RESCHEDULE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""


class DeliveryQueue:
    """The Redis side of webhook deliveries; ``ttl`` (seconds) bounds every key it writes."""

    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self.redis, self.keys, self.ttl = redis, keys, ttl
        self._register = redis.register_script(REGISTER)
        self._renew = redis.register_script(RENEW)
        self._claim = redis.register_script(CLAIM)
        self._reschedule = redis.register_script(RESCHEDULE)

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings) -> DeliveryQueue:
        """The deliveries of ``settings``' fleet, kept as long as a job and its retries last."""
        ttl = settings.stream_ttl + int(settings.webhook_retry_period + settings.job_timeout)
        return cls(redis, Keys(settings.key_prefix), ttl)

    async def register(self, job_id: str, delay: float) -> bool:
        """Make sure job ``job_id``'s webhook is pending: due in ``delay`` seconds at the
        latest should nothing make it due before; False if it was already delivered."""
        keys = [self.keys.webhooks_due(), self.keys.webhook(job_id)]
        return bool(await self._register(keys=keys, args=[job_id, int(delay * 1000), self.ttl]))

    async def renew(self, job_ids: list[str], delay: float) -> None:
        """Keep the pending webhooks of jobs running here from coming due for ``delay``
        seconds."""
        if job_ids:
            await self._renew(keys=[self.keys.webhooks_due()], args=[int(delay * 1000), *job_ids])

    async def make_due(self, job_id: str) -> None:
        """The job ended: its pending webhook is due now (a finished one stays finished)."""
        await self.redis.zadd(self.keys.webhooks_due(), {job_id: 0}, xx=True, lt=True)

    async def claim(self, most: int, visibility: float) -> tuple[int, list[str]]:
        """Up to ``most`` due job ids, hidden from other workers for ``visibility`` seconds,
        with the claim's score (pass it back to :meth:`reschedule`)."""
        score, due = await self._claim(
            keys=[self.keys.webhooks_due()], args=[most, int(visibility * 1000)]
        )
        return int(score), [raw.decode() for raw in due]

    async def reschedule(self, job_id: str, claim: int, delay: float) -> bool:
        """Due again in ``delay`` seconds, unless the delivery moved since our claim."""
        keys = [self.keys.webhooks_due()]
        return bool(await self._reschedule(keys=keys, args=[job_id, claim, int(delay * 1000)]))

    async def record(self, job_id: str) -> dict[str, str]:
        """The job's delivery record (empty if none)."""
        raw = await cast(
            Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.webhook(job_id))
        )
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def save(self, job_id: str, fields: dict[str, str], *, finished: bool = False) -> None:
        """Write record fields; ``finished``: every endpoint has its outcome, drop it from
        the due set."""
        key = self.keys.webhook(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if finished:
                fields = {**fields, "finished": "1"}
            if fields:
                pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl)
            if finished:
                pipe.zrem(self.keys.webhooks_due(), job_id)
            await pipe.execute()

    async def drop(self, job_id: str) -> None:
        """Forget a delivery nothing can make (its job expired unseen)."""
        await self.redis.zrem(self.keys.webhooks_due(), job_id)


def endpoint_field(name: str) -> str:
    """The record field of one endpoint's outcome (JSON)."""
    return f"endpoint:{name}"


async def delivery_status(redis: Redis, keys: Keys, job_id: str) -> dict[str, Any] | None:
    """The job's webhook as ``streamq inspect`` shows it: its event type and each endpoint's
    state, attempts and last error; None when the job has no webhook record."""
    raw = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.webhook(job_id)))
    if not raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    endpoints = {
        name.removeprefix("endpoint:"): json.loads(value)
        for name, value in sorted(fields.items())
        if name.startswith("endpoint:")
    }
    return {
        "type": fields.get("type"),
        "id": fields.get("message_id"),
        "state": "finished" if "finished" in fields else "pending",
        "endpoints": endpoints,
    }
