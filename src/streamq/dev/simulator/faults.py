"""Injected faults: the ``http_*`` error replies, ``fault_times`` counting and broken replies."""

from __future__ import annotations

import asyncio
from typing import Protocol

from streamq.dev.simulator._http import LAST_CHUNK, client_left_within, sse_chunk
from streamq.dev.simulator.config import SimulatorConfig
from streamq.dev.simulator.errors import SERVER_ERROR, HTTPFailure


def http_fault(fault: str, retry_after: float) -> HTTPFailure:
    """The error that fault ``http_<status>`` answers with, as OpenAI words it."""
    status = int(fault.removeprefix("http_"))
    if status == 429:
        return HTTPFailure(
            429,
            "Rate limit reached (simulated).",
            "requests",
            code="rate_limit_exceeded",
            headers=[("retry-after", f"{retry_after:g}")],
        )
    if status == 401:
        return HTTPFailure(401, "Incorrect API key provided (simulated).", code="invalid_api_key")
    if status >= 500:
        return HTTPFailure(status, SERVER_ERROR, "server_error")
    return HTTPFailure(status, f"Simulated HTTP {status} error.")


class FaultCounter:
    """Decides which requests get their fault, counting them per key for ``fault_times``."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def active(self, options: SimulatorConfig, key: str) -> str | None:
        """The fault of this request (``key`` is its messages key), or None for none."""
        if options.fault is None or options.fault_times is None:
            return options.fault
        counter = options.fault_key if options.fault_key is not None else f"{options.fault}|{key}"
        self._counts[counter] = count = self._counts.get(counter, 0) + 1
        return options.fault if count <= options.fault_times else None


async def drops_json_reply(
    fault: str | None, reader: asyncio.StreamReader, stall_seconds: float | None
) -> bool:
    """Apply ``disconnect`` or ``stall`` to a non-streaming reply: True to send no reply."""
    if fault == "disconnect":
        return True
    return fault == "stall" and await client_left_within(reader, stall_seconds)


class BrokenEvents(Protocol):
    """The broken events of one stream's wire format, each framed and ready to write."""

    def bad_utf8(self) -> bytes:
        """A text event whose text ends inside a multi-byte UTF-8 sequence."""
        ...

    def failure(self) -> bytes:
        """The event by which the API reports a server error in a stream already under way."""
        ...


async def break_stream(
    fault: str,
    encoder: BrokenEvents,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stall_seconds: float | None,
) -> bool | None:
    """Apply a stream fault: the stream's result (keep-alive or not), or None to go on."""
    if fault == "disconnect":
        writer.close()  # flushes what was sent, then FIN with the chunked body unfinished
        return False
    if fault == "stall":
        await writer.drain()
        return False if await client_left_within(reader, stall_seconds) else None
    if fault == "silent_end":
        writer.write(LAST_CHUNK)
        return True
    if fault == "error_event":
        writer.write(encoder.failure() + LAST_CHUNK)
        return True
    writer.write(sse_chunk(b"{not json") if fault == "bad_json" else encoder.bad_utf8())
    return None
