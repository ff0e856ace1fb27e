"""A minimal incremental parser for ``text/event-stream`` bodies (the fast chunk path).

Only what chat completion streams use: ``data:`` lines (joined when an event has several),
``event:`` names, comments and blank-line dispatch; ``\\r\\n`` or ``\\n`` line ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SSEParser:
    """Feed it bytes as they arrive; it returns the data of each event completed so far."""

    _buffer: bytes = b""
    _data: list[bytes] = field(default_factory=list)
    _event: bytes = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """``(event name, data)`` of every event that ``chunk`` completed."""
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        events: list[tuple[bytes, bytes]] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append((self._event, b"\n".join(self._data)))
                self._data, self._event = [], b""
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
        return events

    def close(self) -> list[tuple[bytes, bytes]]:
        """Events still pending when the body ended without a final blank line."""
        return self.feed(b"\n\n") if self._buffer or self._data else []
