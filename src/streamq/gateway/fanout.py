"""Following jobs for HTTP responses: every subscriber of a gateway process is read through its
one :class:`~streamq.multiplexer.Multiplexer`.

One blocking ``XREAD`` per batch of followed streams, on the multiplexer's few connections,
instead of a reader and a Redis connection per response; each entry decoded once for all its
subscribers. A subscriber that falls behind (a slow client) is dropped back to Redis by cursor
rather than buffered without bound (``MAX_BACKLOG``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from streamq.core.events import Event
from streamq.gateway.pump import Pump
from streamq.job import EventStream


class Source(Protocol):
    """What a :class:`Feed` reads: a multiplexer's :class:`~streamq.multiplexer.Subscription`."""

    async def __aenter__(self) -> object: ...

    async def next(self, wait: float | None) -> list[Event] | None: ...

    def write_directly(self, sink: Callable[[list[Event]], bool]) -> None: ...

    @property
    def written_at(self) -> float: ...

    def close(self) -> None: ...


class Feed:
    """One response's view of a job's events: one at a time (while a head is held) or all that
    came since the last call (one write for the lot). Raises what
    :meth:`Subscription.next` raises; :meth:`start` before, :meth:`close` after."""

    __slots__ = ("_held", "_subscription")

    def __init__(self, subscription: Source) -> None:
        self._subscription = subscription
        self._held: list[Event] = []

    @property
    def written_at(self) -> float:
        """``time.monotonic()`` of the last batch :meth:`write_directly`'s sink took (0.0:
        none)."""
        return self._subscription.written_at

    async def start(self) -> None:
        """Check the job and start following it (JobNotFound if it is unknown)."""
        await self._subscription.__aenter__()

    async def batch(self, wait: float | None) -> list[Event] | None:
        """Every event that came, in order; ``None`` after ``wait`` seconds without one, or an
        empty list if only :meth:`write_directly`'s sink got events by then."""
        if self._held:
            held, self._held = self._held, []
            return held
        return await self._subscription.next(wait)

    async def event(self, wait: float | None) -> Event | None:
        """The next event; ``None`` after ``wait`` seconds without one."""
        if not self._held:
            batch = await self._subscription.next(wait)
            if batch is None:
                return None
            self._held = batch
        return self._held.pop(0)

    def write_directly(self, sink: Callable[[list[Event]], bool]) -> None:
        """Have the events that come while :meth:`batch` waits passed to ``sink`` instead,
        where the source allows (:meth:`Subscription.write_directly`); not with :meth:`event`.
        :attr:`written_at` says when it last took one."""
        self._subscription.write_directly(sink)

    def close(self) -> None:
        """Stop following: the subscriber's state is let go at once."""
        self._held = []
        self._subscription.close()


class Alone:
    """A :class:`Source` over a job's own reader (``job.events()``), for a caller outside the
    gateway's multiplexer; each read holds a Redis connection of its own."""

    def __init__(self, events: EventStream) -> None:
        self._events = events
        self._pump: Pump[Event] = Pump(aiter(events))

    async def __aenter__(self) -> Alone:
        return self

    async def next(self, wait: float | None) -> list[Event] | None:
        event = await self._pump.next(wait)
        return None if event is None else [event]

    def write_directly(self, sink: Callable[[list[Event]], bool]) -> None:
        """Nothing: a reader of its own hands every event to :meth:`next`."""

    @property
    def written_at(self) -> float:
        """Never: see :meth:`write_directly`."""
        return 0.0

    def close(self) -> None:
        pump, events = self._pump, self._events
        task = asyncio.get_running_loop().create_task(_close(pump, events))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


async def _close(pump: Pump[Event], events: EventStream) -> None:
    await pump.aclose()
    await events.aclose()
