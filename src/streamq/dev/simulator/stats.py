"""The simulator's live counters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class SimulatorStats:
    """Live counters, written only by the server's event loop.

    ``requests`` counts every HTTP request, ``connections`` every accepted TCP connection,
    ``chunks_sent`` every event written: ``chat.completion.chunk`` (not ``[DONE]``) and
    Responses API events alike; in-flight counts cover both endpoints.
    """

    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    in_flight_by_model: dict[str, int] = field(default_factory=dict)
    max_in_flight_by_model: dict[str, int] = field(default_factory=dict)
    chunks_sent: int = 0

    def reset(self) -> None:
        """Zero the totals; maxima restart from what is in flight now."""
        self.requests = self.connections = self.chunks_sent = 0
        self.max_in_flight = self.in_flight
        self.max_in_flight_by_model = {m: n for m, n in self.in_flight_by_model.items() if n}


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
