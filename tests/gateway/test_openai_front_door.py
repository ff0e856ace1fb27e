"""POST /v1/chat/completions driven by the real `openai` SDK pointed at the gateway."""

from __future__ import annotations

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from streamq.dev.simulator import simulated_text

pytestmark = pytest.mark.usefixtures("worker")

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Stream me through the gateway"},
]


async def test_streamed_completion_is_the_simulators_text(sdk: AsyncOpenAI) -> None:
    """stream=True: chunks in OpenAI's format join into the exact text; usage comes last."""
    raw = await sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    job_id = raw.headers["x-streamq-job-id"]
    stream = raw.parse()
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == simulated_text(MESSAGES)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert {c.id for c in chunks} == {f"chatcmpl-{job_id}"}


async def test_non_streamed_completion_waits_for_the_job(
    sdk: AsyncOpenAI, client: httpx2.AsyncClient
) -> None:
    """stream=False: one chat.completion; the job id header lets a client re-attach."""
    raw = await sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=7,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == simulated_text(MESSAGES, max_tokens=7)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 7
    status = await client.get(f"/v1/jobs/{raw.headers['x-streamq-job-id']}")
    assert status.json()["result"]["text"] == completion.choices[0].message.content


async def test_repeating_the_idempotency_key_replays_the_same_job(sdk: AsyncOpenAI) -> None:
    """A client that lost its stream posts again with its Idempotency-Key: the same answer,
    from the same job, from the start."""
    key = {"Idempotency-Key": "chat-turn-7"}
    texts, ids = [], set()
    for _ in range(2):
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers=key,
        )
        ids.add(raw.headers["x-streamq-job-id"])
        stream = raw.parse()
        texts.append("".join([c.choices[0].delta.content or "" async for c in stream]))
    assert len(ids) == 1
    assert texts == [simulated_text(MESSAGES)] * 2


async def test_errors_reach_the_sdk_as_its_own_exceptions(sdk: AsyncOpenAI) -> None:
    """Bad input is BadRequestError, a bad token AuthenticationError, an upstream 400 before any
    text BadRequestError too, streamed or not."""
    with pytest.raises(openai.BadRequestError, match="temperature"):
        await sdk.chat.completions.create(model="m", messages=MESSAGES, temperature=7)
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="not-a-token").chat.completions.create(
            model="m",
            messages=MESSAGES,
        )
    with pytest.raises(openai.BadRequestError, match="400"):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_body={"simulator": {"fault": "http_400"}},
        )
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_body={"simulator": {"fault": "http_400"}},
        )
