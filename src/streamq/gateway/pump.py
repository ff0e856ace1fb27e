"""Waiting for the next item of an async iterator with a timeout, without losing the item.

Cancelling a read of a job's events would close its generator; a :class:`Pump` leaves a read
that outlived its timeout in flight, for the next call to pick up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Pump(Generic[T]):
    """``source``'s items, one :meth:`next` at a time, each awaited at most ``timeout``."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source
        self._pending: asyncio.Future[T] | None = None

    async def next(self, timeout: float | None) -> T | None:
        """The next item, or ``None`` when ``timeout`` seconds pass first (``None``: no limit).

        Raises :class:`StopAsyncIteration` after the last item.
        """
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._source))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        item, self._pending = self._pending, None
        return item.result()

    async def aclose(self) -> None:
        """Stop a read still in flight."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
