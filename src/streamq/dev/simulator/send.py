"""Writing a planned reply to the connection: at the configured pace, with its faults."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from streamq.dev.simulator._http import LAST_CHUNK, json_response, sse_chunk
from streamq.dev.simulator.chunks import ChunkEncoder, completion
from streamq.dev.simulator.config import STREAM_FAULTS
from streamq.dev.simulator.faults import break_stream, drops_json_reply
from streamq.dev.simulator.reply import Reply
from streamq.dev.simulator.stats import SimulatorStats

_YIELD_EVERY: Final = 8  # full-speed streams let other connections run every this many chunks
_HIGH_WATER: Final = 256 * 1024  # bytes buffered in the transport before awaiting drain()
_DONE: Final = sse_chunk(b"[DONE]") + LAST_CHUNK


async def send_json(
    reply: Reply,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    keep_alive: bool,
    headers: Sequence[tuple[str, str]],
) -> bool:
    """Answer a non-streaming request after the time generating it would take."""
    options = reply.options
    if await drops_json_reply(reply.fault, reader, options.stall_seconds):
        return False
    delay = options.time_to_first_token
    if options.tokens_per_second:
        delay += reply.longest / options.tokens_per_second
    if delay:
        await asyncio.sleep(delay)
    writer.write(json_response(200, completion(reply), keep_alive=keep_alive, headers=headers))
    return True


async def send_stream(
    reply: Reply,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: SimulatorStats,
) -> bool:
    """Send the SSE body (the head is already written); False if the connection is done."""
    options = reply.options
    encoder = ChunkEncoder(reply)
    transport = writer.transport
    loop = asyncio.get_running_loop()
    interval = 1 / options.tokens_per_second if options.tokens_per_second else 0.0
    started = loop.time() + options.time_to_first_token
    if options.time_to_first_token:
        await asyncio.sleep(options.time_to_first_token)

    fault = reply.fault if reply.fault in STREAM_FAULTS and reply.fault != "no_done" else None
    # A fault "after" more chunks than the reply has fires right before the finish chunk.
    fault_at = min(options.after, sum(choice.count for choice in reply.choices))
    content_sent = steps = 0
    for sent, (payload, is_content, new_step) in enumerate(encoder.events(), 1):
        if new_step and interval:
            steps += 1
            delay = started + steps * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if fault is not None and content_sent >= fault_at:
            outcome = await break_stream(fault, encoder, reader, writer, options.stall_seconds)
            if outcome is not None:
                return outcome
            fault = None
            started = loop.time() - steps * interval  # resume pacing after a stall
        writer.write(sse_chunk(payload))
        stats.chunks_sent += 1
        content_sent += is_content
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await writer.drain()
        elif not interval and sent % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    writer.write(LAST_CHUNK if reply.fault == "no_done" else _DONE)
    return True
