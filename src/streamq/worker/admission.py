"""Fleet-wide limits on concurrent generations per model, token and request budgets, and
fleet-wide 429 back-off.

Fifty workers each allowed fifty jobs would otherwise open 2,500 streams at a provider that
answers 429 to the 51st. A generation takes a slot in a Redis sorted set before its request
is sent and gives it back when the stream ends; slots are leases (renewed while held), so a
dead worker's slots free themselves. A generation under budgets (``streamq.worker.budgets``)
also needs its estimated tokens, and one request, to fit its model's and its tenant's windows:
the slot and the windows are taken in one script, all or nothing. A 429 with ``retry-after``
pauses the model for the whole fleet. A waiting job just waits (holding its arq slot): neither
limits nor budgets ever fail a job by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from redis.asyncio import Redis

from streamq.core import metrics
from streamq.core._tasks import cancel_and_wait
from streamq.core.keys import Keys
from streamq.core.scripts import ACQUIRED, ADMIT, PAUSE, SETTLE
from streamq.core.settings import Budget
from streamq.worker.budgets import Ask

logger = logging.getLogger("streamq.admission")

ANY_MODEL = "*"
POLL_MIN = 0.05  # seconds between tries while waiting: a release wakes waiters sooner
POLL_MAX = 1.0
# A job waiting for a budget tries again at least this often (seconds): a job ending under its
# estimate frees tokens before the window says. Its mark as the head waiter lasts HEAD_TTL.
BUDGET_RECHECK = 2.0
HEAD_TTL = 3 * BUDGET_RECHECK

# Told why a job waits (a reason of streamq.core.events.Queued) and the seconds it expects to.
Waiting = Callable[[str, float | None], Awaitable[None]]


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
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)
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
    async def slot(
        self, model: str, member: str, ask: Ask | None = None, waiting: Waiting | None = None
    ) -> AsyncIterator[None]:
        """Hold one of ``model``'s slots for the block, with ``ask``'s tokens in its budgets'
        windows, waiting as long as it takes; ``waiting`` hears each new reason to wait."""
        limit = self.limit(model)
        if limit is None and ask is None:
            yield
            return
        keys, args = self._admission_call(model, member, limit, ask)
        delay, waiting_since = POLL_MIN, time.monotonic()
        reason, reason_since = "", waiting_since
        while True:
            got, ms, why = await self._admit(keys=keys, args=args)
            if int(got) == ACQUIRED:
                break
            ms, why = int(ms), why.decode() if isinstance(why, bytes) else str(why)
            if why != reason:
                now = time.monotonic()
                if reason:
                    metrics.admission_reason_waited(reason, now - reason_since)
                reason, reason_since = why, now
                if waiting is not None:
                    await waiting(why, round(ms / 1000, 3) if ms > 0 else None)
            if why == "rate_limited":
                wait = ms / 1000
            elif why != "concurrency" and ms > 0:
                wait = min(ms / 1000 + 0.001, BUDGET_RECHECK) * random.uniform(1.0, 1.05)
            else:
                wait = delay * random.uniform(0.5, 1.0)
                delay = min(delay * 2, POLL_MAX)
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), wait)
        now = time.monotonic()
        metrics.admission_waited(now - waiting_since)
        if reason:
            metrics.admission_reason_waited(reason, now - reason_since)
        if ask is not None:
            metrics.budget_tokens(model, "estimated", ask.tokens)
        if limit is not None:
            self._held[member] = keys[1]
        try:
            yield
        finally:
            if limit is not None:
                self._held.pop(member, None)
                with contextlib.suppress(Exception):
                    await self._redis.zrem(keys[1], member)
            self._released.set()  # waiters in this process try again at once

    async def reached(self, model: str, member: str, ask: Ask) -> None:
        """The admitted generation's request reached the upstream (its first answer came): its
        windows count it from now on, as a provider counting on arrival does (later than its
        admission, when the request took a while to go out)."""
        window_ms = max(1, int(ask.window * 1000))
        keys = self._settle_keys(model, ask)
        await self._settle(keys=keys, args=[member, ask.tokens, ask.tokens, window_ms])

    async def settle(self, model: str, member: str, ask: Ask, tokens: int) -> None:
        """Count the ``tokens`` an admitted generation really used instead of its estimate, in
        every window it was admitted into (it stays there as long as it would have)."""
        keys = self._settle_keys(model, ask)
        await self._settle(keys=keys, args=[member, ask.tokens, tokens, ""])
        metrics.budget_tokens(model, "used", tokens)
        if tokens < ask.tokens:
            self._released.set()  # tokens freed: waiters in this process try again

    async def pause(self, model: str, seconds: float, *, budgeted: bool = False) -> None:
        """Stop the whole fleet from starting ``model`` streams for ``seconds`` (a 429); only
        for a model with a limit or (``budgeted``) a budget: others never check a pause."""
        if (self.limit(model) is None and not budgeted) or seconds <= 0:
            return
        ms = max(1, int(seconds * 1000))
        await self._pause(keys=[self._keys.admission_pause(self._account, model)], args=[ms])
        logger.warning("model %s rate-limited: the fleet waits %.2fs", model, seconds)

    def _admission_call(
        self, model: str, member: str, limit: int | None, ask: Ask | None
    ) -> tuple[list[str], list[str | int]]:
        """ADMIT's keys and arguments."""
        keys = [self._keys.admission_pause(self._account, model), self._slots_key(model)]
        tokens = 0 if ask is None else ask.tokens
        window_ms = 1 if ask is None else max(1, int(ask.window * 1000))
        args: list[str | int] = [member, limit or 0, self._lease_ms, window_ms, tokens]
        args.append(int(HEAD_TTL * 1000))
        for window, budget in self._windows(model, ask):
            keys += [window, self._keys.budget_head(window), self._keys.budget_total(window)]
            args += [budget.tokens or 0, budget.requests or 0]
        return keys, args

    def _settle_keys(self, model: str, ask: Ask) -> list[str]:
        """SETTLE's keys: each window and its running total."""
        keys: list[str] = []
        for window, _ in self._windows(model, ask):
            keys += [window, self._keys.budget_total(window)]
        return keys

    def _windows(self, model: str, ask: Ask | None) -> list[tuple[str, Budget]]:
        """The budget windows ``ask`` counts in, with their budgets."""
        windows: list[tuple[str, Budget]] = []
        if ask is not None and ask.model is not None:
            windows.append((self._keys.model_budget(self._account, model), ask.model))
        if ask is not None and ask.tenant is not None and ask.tenant_budget is not None:
            windows.append((self._keys.tenant_budget(ask.tenant), ask.tenant_budget))
        return windows

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
