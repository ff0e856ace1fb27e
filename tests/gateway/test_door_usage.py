"""The door's non-streamed replies carry the usage of servers that report it only so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def _response(body: dict[str, Any]) -> bytes:
    if not body.get("stream"):  # usage only here: the stream ignores stream_options
        completion = {
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                         "finish_reason": "stop"}],
            "usage": USAGE,
        }  # fmt: skip
        payload = json.dumps(completion).encode()
        head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload)
        return b"HTTP/1.1 200 OK\r\n" + head + b"connection: close\r\n\r\n" + payload
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "hi there"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    return head + sse + b"data: [DONE]\n\n"


@pytest.fixture
async def usage_when_whole() -> AsyncIterator[str]:
    """An OpenAI-compatible server that reports usage for non-streamed calls only."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length")
        )  # fmt: skip
        writer.write(_response(json.loads(await reader.readexactly(length))))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    server.close()
    await server.wait_closed()


async def test_a_non_streamed_reply_has_the_usage_only_a_whole_answer_gets(
    settings: Settings, usage_when_whole: str
) -> None:
    """stream=false through the door: the upstream is asked for the whole answer, so its usage
    is in the reply; a streamed request gets the same text."""
    upstream = settings.replace(openai_base_url=usage_when_whole)
    app = create_app(upstream, GatewayConfig(tokens=TOKENS))
    with GatewayThread(app, worker=upstream) as gateway:
        async with AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=TOKEN_A, max_retries=0
        ) as client:
            messages: Any = [{"role": "user", "content": "hello"}]
            whole = await client.chat.completions.create(model="m", messages=messages)
            stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
            streamed = "".join(
                [c.choices[0].delta.content or "" async for c in stream if c.choices]
            )
    assert whole.choices[0].message.content == streamed == "hi there"
    assert whole.usage is not None
    assert whole.usage.model_dump(exclude_none=True) == USAGE
