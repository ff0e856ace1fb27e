"""A scripted OpenAI-compatible server: each request's JSON body in, a whole HTTP response out.

For the answers no real server gives on demand (a chunk shape, a key that cannot be encoded,
usage only when not streamed): the test says what to answer, the server reads one request per
connection and closes it after answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

Answer = Callable[[dict[str, Any]], bytes]


@contextlib.asynccontextmanager
async def scripted_upstream(answer: Answer) -> AsyncIterator[str]:
    """The base URL (``http://127.0.0.1:PORT/v1``) of a server answering ``answer(body)``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length")
        )  # fmt: skip
        writer.write(answer(json.loads(await reader.readexactly(length))))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


def sse_response(frames: Iterable[bytes]) -> bytes:
    """A 200 event stream of ``frames`` (each a whole SSE frame), closed after them."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    return head + b"".join(frames)


def data_frames(chunks: Iterable[Any], *, done: bool = True) -> list[bytes]:
    """Chat-style frames: ``data: <json>`` per chunk, then ``data: [DONE]`` if ``done``."""
    frames = [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks]
    return [*frames, b"data: [DONE]\n\n"] if done else frames


def typed_frames(events: Iterable[dict[str, Any]]) -> list[bytes]:
    """Responses-style frames: ``event: <type>`` and ``data: <json>`` per event."""
    return [
        b"event: " + event["type"].encode() + b"\ndata: " + json.dumps(event).encode() + b"\n\n"
        for event in events
    ]


def json_response(body: Any) -> bytes:
    """A 200 ``application/json`` answer holding ``body``."""
    payload = json.dumps(body).encode()
    head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload)
    return b"HTTP/1.1 200 OK\r\n" + head + b"connection: close\r\n\r\n" + payload
