"""The simulator's live counters."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

SERVED_KEPT = 100_000  # the last requests' arrivals, for peak_tokens (a server may run for days)


@dataclass
class SimulatorStats:
    """Live counters, written only by the server's event loop.

    ``requests`` counts every HTTP request, ``connections`` every accepted TCP connection,
    ``chunks_sent`` every event written: ``chat.completion.chunk`` (not ``[DONE]``) and
    Responses API events alike; in-flight counts cover both endpoints. ``served`` has one
    :class:`Served` per completion or response accepted (both endpoints; the last
    ``SERVED_KEPT``): when it arrived, its model and the tokens its usage reports, so
    :meth:`peak_tokens` and :meth:`peak_requests` can say what any window of time saw.
    """

    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    in_flight_by_model: dict[str, int] = field(default_factory=dict)
    max_in_flight_by_model: dict[str, int] = field(default_factory=dict)
    chunks_sent: int = 0
    served: deque[Served] = field(default_factory=lambda: deque(maxlen=SERVED_KEPT))

    def reset(self) -> None:
        """Zero the totals; maxima restart from what is in flight now."""
        self.requests = self.connections = self.chunks_sent = 0
        self.served.clear()
        self.max_in_flight = self.in_flight
        self.max_in_flight_by_model = {m: n for m, n in self.in_flight_by_model.items() if n}

    def serve(self, model: str, tokens: int) -> None:
        """Record a completion or response accepted now that will use ``tokens``."""
        self.served.append(Served(time.monotonic(), model, tokens))

    def peak_tokens(self, model: str, window: float) -> int:
        """The most tokens of ``model`` served in any ``window`` seconds (by arrival)."""
        return _peak([s for s in self.served if s.model == model], window, lambda s: s.tokens)

    def peak_requests(self, model: str, window: float) -> int:
        """The most requests for ``model`` in any ``window`` seconds."""
        return _peak([s for s in self.served if s.model == model], window, lambda s: 1)


@dataclass(frozen=True, slots=True)
class Served:
    """One completion or response: when it arrived (``time.monotonic()``), its model and the
    tokens its usage reports (prompt and completion)."""

    at: float
    model: str
    tokens: int


def _peak(served: list[Served], window: float, weight: Callable[[Served], int]) -> int:
    """The largest total weight of requests arriving within less than ``window`` of each other."""
    served = sorted(served, key=lambda s: s.at)
    peak = total = start = 0
    for item in served:
        total += weight(item)
        while item.at - served[start].at >= window:
            total -= weight(served[start])
            start += 1
        peak = max(peak, total)
    return peak


@contextlib.contextmanager
def in_flight(stats: SimulatorStats, model: str) -> Iterator[None]:
    """Count one completion or response for ``model`` as in flight while the block runs."""
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    count = stats.in_flight_by_model[model] = stats.in_flight_by_model.get(model, 0) + 1
    stats.max_in_flight_by_model[model] = max(stats.max_in_flight_by_model.get(model, 0), count)
    try:
        yield
    finally:
        stats.in_flight -= 1
        stats.in_flight_by_model[model] -= 1
