"""The worker's OpenAI clients: several small connection pools instead of one large one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from openai import AsyncOpenAI

STREAMS_PER_CLIENT = 64


@dataclass(eq=False)
class _Slot:
    client: AsyncOpenAI
    streams: int = 0


class ClientPool:
    """Hands each stream an ``AsyncOpenAI`` client carrying fewer than ``per_client`` others.

    httpx's connection pool walks all of its connections whenever a request starts or a
    response closes; with a thousand streams on one client that bookkeeping alone took a fifth
    of a worker's CPU. Clients are made on demand and kept, so connections stay warm, and the
    earliest client with room is used first, so a quiet worker keeps one.
    """

    def __init__(
        self, make_client: Callable[[], AsyncOpenAI], per_client: int = STREAMS_PER_CLIENT
    ) -> None:
        self._make_client = make_client
        self._per_client = per_client
        self._slots: list[_Slot] = []

    def warm(self) -> None:
        """Make the first client now, so that a configuration error shows at start-up."""
        if not self._slots:
            self._slots.append(_Slot(self._make_client()))

    @property
    def clients(self) -> int:
        """How many clients exist."""
        return len(self._slots)

    @contextlib.contextmanager
    def lease(self) -> Iterator[AsyncOpenAI]:
        """A client for one stream, for the block's length."""
        slot = next((s for s in self._slots if s.streams < self._per_client), None)
        if slot is None:
            slot = _Slot(self._make_client())
            self._slots.append(slot)
        slot.streams += 1
        try:
            yield slot.client
        finally:
            slot.streams -= 1

    async def aclose(self) -> None:
        """Close every client's connections."""
        slots, self._slots = self._slots, []
        for slot in slots:
            await slot.client.close()
