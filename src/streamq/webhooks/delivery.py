"""A worker's webhook loop: claim due deliveries, post each to its endpoints, retry, record.

At-least-once: a job is registered when it starts on a worker and made due when its run there
returns; while it runs, the worker keeps pushing its due time a few leases ahead, so should the
worker die (even between the job's end and making its webhook due) the webhook comes due within
``3 * STREAMQ_LEASE`` and is looked at. The delivery stays in Redis until every endpoint
answered 2xx or gave up after ``STREAMQ_WEBHOOK_RETRY_PERIOD``. A worker killed mid-delivery
leaves its claims to come due again, so a receiver may see one ``webhook-id`` twice, never none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError

from streamq.core import metrics
from streamq.core._tasks import cancel_and_wait
from streamq.core.events import Event, decode_entry, is_terminal
from streamq.core.keys import Keys
from streamq.core.settings import Settings
from streamq.responses.store import ResponseStore, StoredResponse, replayed
from streamq.webhooks.bodies import Notice, notice
from streamq.webhooks.endpoints import Endpoint, EndpointHealth, endpoints_for
from streamq.webhooks.queue import DeliveryQueue, endpoint_field
from streamq.webhooks.signing import signed_headers

logger = logging.getLogger("streamq.webhooks")

BATCH = 32  # deliveries claimed at once
IN_FLIGHT = 64  # deliveries posting at once: a slow endpoint holds one of them, not the loop
SHUTDOWN_GRACE = 1.0  # seconds a stopping worker gives its last jobs' webhooks to be made due
IDLE_POLL = 0.5  # seconds between looks at the due set when nothing was due
VISIBILITY_SLACK = 5.0  # seconds a claim outlives its posts' timeout (Redis round trips)
WATCH_LEASES = 3  # a running job's webhook is kept this many leases from coming due
RECHECK = 60.0  # a job found not ended is looked at again this much later (or when it ends)
FIRST_RETRY = 1.0  # seconds; doubles each try
MAX_RETRY = 600.0
MAKE_DUE_TRIES = 8
MAX_RESPONSE_BYTES = 64 * 1024  # read of a receiver's answer; the rest is dropped
FINAL_STATES = frozenset({"delivered", "failed"})


class WebhookDelivery:
    """One worker process's side of webhooks; started and stopped with its runtime."""

    def __init__(self, settings: Settings, redis: Redis, streams: Redis) -> None:
        self.settings = settings
        self.redis, self.streams = redis, streams
        self.keys = Keys(settings.key_prefix)
        self.queue = DeliveryQueue.for_settings(redis, settings)
        self.visibility = settings.webhook_timeout + VISIBILITY_SLACK
        self._first_retry = min(FIRST_RETRY, settings.webhook_retry_period / 8)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()  # making webhooks due
        self._posting: set[asyncio.Task[None]] = set()
        self._running: Counter[str] = Counter()  # jobs registered here whose run goes on
        self._watch = WATCH_LEASES * settings.lease
        self._renewing: asyncio.Task[None] | None = None
        self.health = EndpointHealth()

    def start(self) -> None:
        """Start the delivery loop."""
        self._task = asyncio.create_task(self._loop(), name="streamq-webhooks")
        self._renewing = asyncio.create_task(self._renew_loop(), name="streamq-webhooks-renew")

    async def aclose(self) -> None:
        """Stop the loop (claims in flight come due again for another worker)."""
        if self._background:
            await asyncio.wait(self._background, timeout=SHUTDOWN_GRACE)
        loops = (self._task, self._renewing)
        tasks = [t for t in (*loops, *self._background, *self._posting) if t is not None]
        await cancel_and_wait(tasks)  # (a cancel inside a redis-py command can be swallowed)
        if self._session is not None:
            await self._session.close()

    async def register(self, job_id: str) -> None:
        """A job starts here: its webhook is pending, kept from coming due while it runs (call
        :meth:`left` when the run is over; raises RedisError: run the job later)."""
        await self.queue.register(job_id, self._watch)
        self._running[job_id] += 1

    def left(self, job_id: str) -> None:
        """The job's run here is over, however it went: stop keeping its webhook back."""
        if self._running[job_id] > 0:
            self._running[job_id] -= 1
        if self._running[job_id] <= 0:
            del self._running[job_id]

    def ended(self, job_id: str) -> None:
        """The job's run here returned: its webhook is due (retried through Redis blips; if
        this worker dies first, its webhook comes due when no renewal keeps it back)."""
        task = asyncio.create_task(self._make_due(job_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _make_due(self, job_id: str) -> None:
        for attempt in range(MAKE_DUE_TRIES):
            try:
                await self.queue.make_due(job_id)
            except RedisError as exc:
                logger.warning("job %s: webhook not made due yet: %r", job_id, exc)
                await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
                continue
            self._wake.set()
            return

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease / 2)
            try:
                await self.queue.renew(list(self._running), self._watch)
            except Exception as exc:  # a missed renewal costs an early look, nothing more
                logger.warning("webhooks of running jobs not renewed: %r", exc)

    async def _loop(self) -> None:
        failures = 0
        while True:
            room = min(BATCH, IN_FLIGHT - len(self._posting))
            if room <= 0:
                await asyncio.wait(self._posting, return_when=asyncio.FIRST_COMPLETED)
                continue
            self._wake.clear()
            try:
                claimed = await self.claim(room)
                failures = 0
            except Exception as exc:  # Redis down, or anything else: never end the worker
                failures += 1
                logger.warning("webhook deliveries paused: %r", exc)
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            if claimed < room:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)

    async def claim(self, most: int) -> int:
        """Claim up to ``most`` due deliveries and start making them; how many it claimed."""
        claim, job_ids = await self.queue.claim(most, self.visibility)
        for job_id in job_ids:
            task = asyncio.create_task(self._deliver_safely(job_id, claim))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
        return len(job_ids)

    async def _deliver_safely(self, job_id: str, claim: int) -> None:
        try:
            await self._deliver(job_id, claim)
        except Exception as exc:  # its claim runs out and it comes due again
            logger.warning("job %s: webhook delivery interrupted: %r", job_id, exc)

    async def _deliver(self, job_id: str, claim: int) -> None:
        record = await self.queue.record(job_id)
        if "finished" in record:
            await self.queue.drop(job_id)
            return
        if "body" not in record:
            made = await self._first_look(job_id, claim)
            if made is None:
                return
            record.update(made)
        tenant = record.get("tenant") or None
        found = Notice(record["message_id"], record["type"], record["body"])
        states = {
            name.removeprefix("endpoint:"): json.loads(value)
            for name, value in record.items()
            if name.startswith("endpoint:")
        }
        endpoints = [
            e
            for e in endpoints_for(self.settings, tenant)
            if states.get(e.name, {}).get("state") not in FINAL_STATES
        ]
        results = await asyncio.gather(*(self._try(e, found) for e in endpoints))
        since_ms = int(record["since"])
        now_ms = int(time.time() * 1000)
        expired = now_ms - since_ms >= self.settings.webhook_retry_period * 1000
        attempts = int(record.get("attempts", "0")) + 1
        fields = {"attempts": str(attempts)}
        retrying = False
        for endpoint, (status, error, posted) in zip(endpoints, results, strict=True):
            before = states.get(endpoint.name, {})
            tries = before.get("attempts", 0) + int(posted)
            if not posted:  # held back: what the last post met still stands
                status, error = before.get("status"), before.get("error") or error
            state = "delivered" if error is None else "failed" if expired else "retrying"
            retrying = retrying or state == "retrying"
            if posted or state == "failed":
                metrics.webhook_attempted(state)
            outcome = {"state": state, "attempts": tries, "status": status, "error": error}
            outcome["at"] = round(time.time(), 3)
            fields[endpoint_field(endpoint.name)] = json.dumps(outcome)
            if state == "failed":
                logger.error(
                    "job %s: webhook %s to %s failed for good after %d tries: %s",
                    job_id, found.message_id, endpoint.name, tries, error,
                )  # fmt: skip
        if not retrying:
            await self.queue.save(job_id, fields, finished=True)
            return
        await self.queue.save(job_id, fields)
        left = since_ms / 1000 + self.settings.webhook_retry_period - time.time()
        delay = min(self._first_retry * 2 ** min(attempts - 1, 30), MAX_RETRY)
        await self.queue.reschedule(
            job_id, claim, max(0.0, min(delay * random.uniform(0.8, 1.0), left))
        )

    async def _first_look(self, job_id: str, claim: int) -> dict[str, str] | None:
        """The body of an ended job's webhook, saved in its record; None (rescheduled or
        dropped) when the job has not ended."""
        terminal = await self._terminal(job_id)
        if terminal is None:
            if await self._exists(job_id):
                await self.queue.reschedule(job_id, claim, RECHECK)
            else:
                logger.error("job %s expired before it ended: no webhook", job_id)
                metrics.webhook_attempted("failed")
                await self.queue.save(job_id, {"expired": "1"}, finished=True)
            return None
        tenant = await self._optional_text(self.keys.owner(job_id))
        made = await self._notice(job_id, terminal)
        fields = {"message_id": made.message_id, "type": made.type, "body": made.body}
        fields |= {"since": str(int(time.time() * 1000)), "tenant": tenant or ""}
        await self.queue.save(job_id, fields)
        return fields

    async def _notice(self, job_id: str, terminal: Event) -> Notice:
        """The job's webhook; for a stored response, of the status its Response shows (its
        stream replayed as ``/v1/responses`` replays it: an attempt restarted after showing
        output fails the response even though the job ended ``done``)."""
        stored = _stored_response(await self._optional_text(self.keys.response(job_id)))
        if stored is None:
            return notice(job_id, terminal)
        events = await ResponseStore(self.redis, self.settings, self.streams).events(job_id)
        status = replayed(stored, events).snapshot()["status"]
        return notice(job_id, terminal, stored.id, status)

    async def _terminal(self, job_id: str) -> Event | None:
        entries = await self.streams.xrevrange(self.keys.events(job_id), count=1)
        if not entries:
            return None
        raw_id, raw = entries[0]
        event = decode_entry(raw_id.decode(), raw)
        return event if is_terminal(event) else None

    async def _exists(self, job_id: str) -> bool:
        state = await self.streams.exists(self.keys.state(job_id))
        return bool(state or await self.redis.exists(self.keys.request(job_id)))

    async def _optional_text(self, key: str) -> str | None:
        """A string key, or None when missing or this worker's ACL user may not read it."""
        try:
            raw = await self.redis.get(key)
        except NoPermissionError:
            logger.warning("webhooks: this worker may not read %s (see docs/operations.md)", key)
            return None
        return None if raw is None else raw.decode()

    async def _try(self, endpoint: Endpoint, made: Notice) -> tuple[int | None, str | None, bool]:
        """Post, unless this worker holds posts to the endpoint back: (status, error, posted)."""
        if not self.health.may_post(endpoint.name):
            return None, "held back: the endpoint keeps failing", False
        status, error = await self._post(endpoint, made)
        self.health.posted(endpoint.name, error is None)
        return status, error, True

    async def _post(self, endpoint: Endpoint, made: Notice) -> tuple[int | None, str | None]:
        """Post once: the answer's status and, unless it was 2xx, why it failed."""
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = signed_headers(endpoint.secret, made.message_id, int(time.time()), made.body)
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        try:
            async with self._session.post(
                endpoint.url, data=made.body.encode(), headers=headers,
                allow_redirects=False, timeout=timeout,
            ) as answer:  # fmt: skip
                await answer.content.read(MAX_RESPONSE_BYTES)
                if 200 <= answer.status < 300:
                    return answer.status, None
                return answer.status, f"HTTP {answer.status}"
        except TimeoutError:
            return None, f"no answer within {self.settings.webhook_timeout:g}s"
        except aiohttp.ClientError as exc:  # the class only: a message may carry the URL
            return None, type(exc).__name__


def _stored_response(raw: str | None) -> StoredResponse | None:
    """What ``/v1/responses`` stored of the job's response, if anything readable."""
    if raw is None:
        return None
    try:
        return StoredResponse.from_json(raw)
    except (ValueError, KeyError, TypeError):
        logger.warning("a stored response is unreadable: its job's webhook takes the job shape")
        return None
