"""How many jobs a worker process starts at once.

Starting a job is the CPU-heavy part of its life: arq's reads, the claim, and the SDK building
and sending the upstream request (a few milliseconds of Python each). asyncio runs every ready
task once per loop turn, so a poll that took a thousand jobs made each turn carry a thousand
starts: the streams already running waited a second or more for their next read, and every
job's first delta came late. Through the gate only ``limit`` jobs start at a time; each lets
the next one in as soon as its request is on its way upstream (or it waits for admission, or
it ends), so starts go on at the same pace while running streams keep their turn.

The limit is ``STREAMQ_START_CONCURRENCY``. A job holds its slot through its three round trips
to Redis as well, so a worker far from its Redis starts fewer jobs a second than its core could.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

# The release of the gate slot the current job holds, if it holds one (set per job task).
_held: ContextVar[Callable[[], None] | None] = ContextVar("streamq_start_slot", default=None)


class StartGate:
    """At most ``limit`` jobs between being taken and their upstream request going out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.starting = 0  # jobs holding a slot now
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def start(self) -> AsyncIterator[None]:
        """Hold a slot for the block, or until :func:`started` gives it back earlier."""
        await self._slots.acquire()
        self.starting += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.starting -= 1
                self._slots.release()

        token = _held.set(release)
        try:
            yield
        finally:
            _held.reset(token)
            release()


def started() -> None:
    """The current job is past its start (its request went out, or it waits for admission):
    its gate slot, if it holds one, goes to the next job."""
    release = _held.get()
    if release is not None:
        release()


async def request_sent(_request: Any) -> None:
    """An httpx ``request`` event hook: the SDK has built the request and hands it over."""
    started()
