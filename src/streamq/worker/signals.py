"""Signals a worker listens for: cancel requests for its running attempts, and wake-ups.

Cancel requests arrive on a pub/sub channel. One for a job this process does not run (yet) is
remembered for a minute: the job may be between its claim and its tracking here. After every
(re)subscription the heartbeat re-reads its jobs' cancel flags, so a request sent while the
channel was down is not lost. A producer publishes on the queue's wake
channel after enqueueing, so an idle worker starts the job at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from streamq.core.keys import Keys

logger = logging.getLogger("streamq.fleet")

LISTEN_TIMEOUT = 2.0  # below the pool's socket timeout, so an idle channel is not an error
REMEMBER_SECONDS = 60.0  # how long a cancel request for no run here is kept
REMEMBER_MAX = 10_000


class Signals:
    """Listens on the cancel channel (and the wake channel, if given) until cancelled."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        runs: Mapping[str, Any],
        *,
        wake_channel: str | None = None,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.runs = runs
        self._wake_channel = wake_channel.encode() if wake_channel else None
        self._on_wake = on_wake
        # Each (re)subscription may follow requests sent while not subscribed: the heartbeat
        # reads the flags again after each.
        self.subscriptions = 0
        self._unmatched: dict[str, float] = {}  # job id -> when its cancel request came

    def asked(self, job_id: str) -> bool:
        """Whether a cancel request for ``job_id`` came within the last minute while no run of
        it was here (a job claimed just before its request, tracked just after)."""
        horizon = time.monotonic() - REMEMBER_SECONDS
        for remembered, at in list(self._unmatched.items()):  # oldest first
            if at >= horizon:
                break
            del self._unmatched[remembered]
        return job_id in self._unmatched

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == self._wake_channel:
            if self._on_wake is not None:
                self._on_wake()
            return
        job_id = data.decode(errors="replace")
        run = self.runs.get(job_id)
        if run is not None:
            run.cancel("cancel requested")
            return
        if len(self._unmatched) >= REMEMBER_MAX:
            del self._unmatched[next(iter(self._unmatched))]
        self._unmatched.pop(job_id, None)
        self._unmatched[job_id] = time.monotonic()

    async def listen(self) -> None:
        """Dispatch messages as they come; reconnect (with backoff) when Redis goes away."""
        channels = [self._keys.cancel_channel().encode()]
        if self._wake_channel is not None:
            channels.append(self._wake_channel)
        backoff = 0.1
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(*channels)
                    self.subscriptions += 1
                    backoff = 0.1
                    if self._on_wake is not None:
                        self._on_wake()  # a job enqueued while we were not listening
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_TIMEOUT)
                        if message is not None:
                            self._dispatch(message["channel"], message["data"])
            except Exception as exc:
                logger.warning("pub/sub listener lost Redis (%r); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
