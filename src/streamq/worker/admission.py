"""Fleet-wide limits on concurrent generations per model, and fleet-wide 429 back-off.

Fifty workers each allowed fifty jobs would otherwise open 2,500 streams at a provider that
answers 429 to the 51st. A generation takes a slot in a Redis sorted set before its request
is sent and gives it back when the stream ends; slots are leases (renewed while held), so a
dead worker's slots free themselves. A 429 with ``retry-after`` pauses the model for the whole
fleet. A job waiting for a slot just waits: the limit never fails a job by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping

from redis.asyncio import Redis

from streamq.core import metrics
from streamq.core._tasks import cancel_and_wait
from streamq.core.keys import Keys
from streamq.core.scripts import ACQUIRE, ACQUIRED, PAUSE

logger = logging.getLogger("streamq.admission")

ANY_MODEL = "*"
POLL_MIN = 0.05  # seconds between tries while waiting: a release wakes waiters sooner
POLL_MAX = 1.0


class Admission:
    """This worker's side of the fleet's per-model limits (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        limits: Mapping[str, int],
        *,
        lease: float,
        api_key: str | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._limits = dict(limits)
        self._lease_ms = int(lease * 1000)
        self._interval = lease / 3
        # Limits are per provider account: different keys get different slots. Only a short
        # digest of the key names them; the key itself never reaches Redis.
        digest = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
        self._account = digest
        self._held: dict[str, str] = {}  # member -> slots key
        self._released = asyncio.Event()
        self._acquire = redis.register_script(ACQUIRE)
        self._pause = redis.register_script(PAUSE)
        self._tasks: list[asyncio.Task[None]] = []

    def limit(self, model: str) -> int | None:
        """The fleet-wide limit for ``model``, or None when it has none."""
        return self._limits.get(model, self._limits.get(ANY_MODEL))

    def start(self) -> None:
        """Renew held slots in the background (only needed when limits are set)."""
        if self._limits:
            self._tasks.append(asyncio.create_task(self._renew(), name="streamq-admission"))

    async def aclose(self) -> None:
        """Stop renewing and give back every slot still held."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for member, key in list(self._held.items()):
            with contextlib.suppress(Exception):
                await self._redis.zrem(key, member)
        self._held.clear()

    @contextlib.asynccontextmanager
    async def slot(self, model: str, member: str) -> AsyncIterator[None]:
        """Hold one of ``model``'s slots for the block, waiting for one as long as it takes."""
        limit = self.limit(model)
        if limit is None:
            yield
            return
        key, pause = self._slots_key(model), self._keys.admission_pause(self._account, model)
        delay, waiting_since = POLL_MIN, time.monotonic()
        while True:
            got = int(await self._acquire(keys=[key, pause], args=[member, limit, self._lease_ms]))
            if got == ACQUIRED:
                break
            wait = -got / 1000 if got < 0 else delay * random.uniform(0.5, 1.0)
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), wait)
            delay = min(delay * 2, POLL_MAX)
        metrics.admission_waited(time.monotonic() - waiting_since)
        self._held[member] = key
        try:
            yield
        finally:
            self._held.pop(member, None)
            with contextlib.suppress(Exception):
                await self._redis.zrem(key, member)
            self._released.set()  # waiters in this process try again at once

    async def pause(self, model: str, seconds: float) -> None:
        """Stop the whole fleet from starting ``model`` streams for ``seconds`` (a 429)."""
        if self.limit(model) is None or seconds <= 0:
            return
        ms = max(1, int(seconds * 1000))
        await self._pause(keys=[self._keys.admission_pause(self._account, model)], args=[ms])
        logger.warning("model %s rate-limited: the fleet waits %.2fs", model, seconds)

    def _slots_key(self, model: str) -> str:
        return self._keys.admission_slots(self._account, model)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            held = list(self._held.items())
            if not held:
                continue
            try:
                seconds, micros = await self._redis.time()
                expiry = int(seconds) * 1000 + int(micros) // 1000 + self._lease_ms
                async with self._redis.pipeline(transaction=False) as pipe:
                    for member, key in held:
                        pipe.zadd(key, {member: expiry}, xx=True)
                        pipe.pexpire(key, self._lease_ms * 2)
                    await pipe.execute()
            except Exception as exc:  # Redis trouble: the next round tries again
                logger.warning("renewing admission slots failed: %r", exc)
