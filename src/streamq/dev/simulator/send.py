"""Writing a planned reply to the connection: at the configured pace, with its faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Final

from streamq.dev.simulator._http import LAST_CHUNK, json_response, sse_chunk
from streamq.dev.simulator.chunks import ChunkEncoder, completion
from streamq.dev.simulator.config import STREAM_FAULTS, SimulatorConfig
from streamq.dev.simulator.faults import BrokenEvents, break_stream, drops_json_reply
from streamq.dev.simulator.reply import Reply
from streamq.dev.simulator.responses_events import ResponseEncoder, response_object
from streamq.dev.simulator.responses_plan import ResponsePlan
from streamq.dev.simulator.stats import SimulatorStats

_YIELD_EVERY: Final = 8  # full-speed streams let other connections run every this many chunks
_HIGH_WATER: Final = 256 * 1024  # bytes buffered in the transport before awaiting drain()
_DONE: Final = sse_chunk(b"[DONE]") + LAST_CHUNK


async def send_json(
    payload: object,
    tokens: int,
    options: SimulatorConfig,
    fault: str | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    keep_alive: bool,
    headers: Sequence[tuple[str, str]],
) -> bool:
    """Answer a non-streaming request after the time generating ``tokens`` would take."""
    if await drops_json_reply(fault, reader, options.stall_seconds):
        return False
    delay = options.time_to_first_token
    if options.tokens_per_second:
        delay += tokens / options.tokens_per_second
    if delay:
        await asyncio.sleep(delay)
    writer.write(json_response(200, payload, keep_alive=keep_alive, headers=headers))
    return True


async def send_completion(
    reply: Reply,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    keep_alive: bool,
    headers: Sequence[tuple[str, str]],
) -> bool:
    """Answer a non-streaming chat completion request."""
    payload = completion(reply)
    return await send_json(
        payload,
        reply.longest,
        reply.options,
        reply.fault,
        reader,
        writer,
        keep_alive=keep_alive,
        headers=headers,
    )


async def send_response(
    plan: ResponsePlan,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    keep_alive: bool,
    headers: Sequence[tuple[str, str]],
) -> bool:
    """Answer a non-streaming Responses API request."""
    payload = response_object(plan, "incomplete" if plan.incomplete else "completed")
    return await send_json(
        payload,
        plan.output_tokens,
        plan.options,
        plan.fault,
        reader,
        writer,
        keep_alive=keep_alive,
        headers=headers,
    )


async def send_stream(
    reply: Reply,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: SimulatorStats,
) -> bool:
    """Send the chat SSE body (the head is already written); False if the connection is done."""
    encoder = ChunkEncoder(reply)
    events = ((sse_chunk(chunk), content, step) for chunk, content, step in encoder.events())
    tokens = sum(choice.count for choice in reply.choices)
    fault = None if reply.fault == "no_done" else reply.fault
    outcome = await _send_events(
        events, encoder, tokens, fault, reply.options, reader, writer, stats
    )
    if outcome is not None:
        return outcome
    writer.write(LAST_CHUNK if reply.fault == "no_done" else _DONE)
    return True


async def send_response_stream(
    plan: ResponsePlan,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: SimulatorStats,
) -> bool:
    """Send the Responses SSE body (the head is already written); False if the connection is
    done. These streams have no ``[DONE]``, so the ``no_done`` fault changes nothing."""
    encoder = ResponseEncoder(plan)
    fault = None if plan.fault == "no_done" else plan.fault
    outcome = await _send_events(
        encoder.events(), encoder, plan.output_tokens, fault, plan.options, reader, writer, stats
    )
    if outcome is not None:
        return outcome
    writer.write(LAST_CHUNK)
    return True


async def _send_events(
    events: Iterator[tuple[bytes, bool, bool]],
    encoder: BrokenEvents,
    tokens: int,
    fault: str | None,
    options: SimulatorConfig,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: SimulatorStats,
) -> bool | None:
    """Write framed ``(event, carries_a_token, starts_a_token_step)`` events at the configured
    pace, breaking the stream after ``options.after`` token events if ``fault`` says so: the
    stream's result if it ended early, else None."""
    transport = writer.transport
    loop = asyncio.get_running_loop()
    interval = 1 / options.tokens_per_second if options.tokens_per_second else 0.0
    started = loop.time() + options.time_to_first_token
    if options.time_to_first_token:
        await asyncio.sleep(options.time_to_first_token)

    if fault not in STREAM_FAULTS:
        fault = None
    # A fault "after" more tokens than the reply has fires right before the finishing events.
    fault_at = min(options.after, tokens)
    sent = content_sent = steps = 0
    while True:
        # The fault is checked before the next event is drawn: drawing one numbers it.
        if fault is not None and content_sent >= fault_at:
            outcome = await break_stream(fault, encoder, reader, writer, options.stall_seconds)
            if outcome is not None:
                return outcome
            fault = None
            started = loop.time() - steps * interval  # resume pacing after a stall
        drawn = next(events, None)
        if drawn is None:
            return None
        event, is_content, new_step = drawn
        if new_step and interval:
            steps += 1
            delay = started + steps * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        writer.write(event)
        sent += 1
        stats.chunks_sent += 1
        content_sent += is_content
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await writer.drain()
        elif not interval and sent % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
