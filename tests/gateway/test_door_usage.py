"""The door's non-streamed replies carry the usage of servers that report it only so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.upstreams import data_frames, json_response, scripted_upstream, sse_response

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def _response(body: dict[str, Any]) -> bytes:
    if not body.get("stream"):  # usage only here: the stream ignores stream_options
        completion = {
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                         "finish_reason": "stop"}],
            "usage": USAGE,
        }  # fmt: skip
        return json_response(completion)
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "hi there"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    return sse_response(data_frames(chunks))


@pytest.fixture
async def usage_when_whole() -> AsyncIterator[str]:
    """An OpenAI-compatible server that reports usage for non-streamed calls only."""
    async with scripted_upstream(_response) as base_url:
        yield base_url


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
