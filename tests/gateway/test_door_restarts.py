"""The door never sends text from two attempts: a job restarted before any text is followed
silently, one restarted after text ends its answer with one error frame (as OpenAI's streams end
on a failure), and a non-streamed answer is the last attempt's."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from streamq.dev.simulator import simulated_text, simulated_tokens
from tests.gateway.sse import chunks_of, door_stream

pytestmark = pytest.mark.usefixtures("worker")

MODEL = "gpt-4o-mini"
# The first attempt breaks off after 3 tokens; the worker's second attempt answers.
AFTER_TEXT = {"simulator": {"fault": "disconnect", "after": 3, "fault_times": 1}}


def conversation(topic: str) -> list[ChatCompletionMessageParam]:
    """Messages of the test's own: the simulator counts `fault_times` per conversation."""
    return [{"role": "user", "content": f"Tell me about {topic}."}]


async def attempt(client: httpx2.AsyncClient, job_id: str) -> int:
    """The job's current attempt."""
    return int((await client.get(f"/v1/jobs/{job_id}")).json()["attempt"])


@pytest.mark.parametrize(
    "fault",
    [
        {"fault": "disconnect", "after": 0, "fault_times": 1},
        {"fault": "http_503", "fault_times": 1},
    ],
    ids=["disconnect", "http_503"],
)
async def test_a_restart_before_any_text_is_one_clean_answer(
    sdk: AsyncOpenAI, client: httpx2.AsyncClient, fault: dict[str, Any]
) -> None:
    """The first attempt fails before its first token: the client sees one whole answer, with
    one role chunk, as if nothing had happened."""
    messages = conversation(f"a restart before text ({fault['fault']})")
    raw = await sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, stream=True, extra_body={"simulator": fault}
    )
    chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == simulated_text(messages)
    assert [c.choices[0].delta.role for c in chunks].count("assistant") == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert await attempt(client, raw.headers["x-streamq-job-id"]) == 2


async def test_a_restart_after_text_ends_with_one_error_frame(client: httpx2.AsyncClient) -> None:
    """Text went out: the answer ends right after one OpenAI-shaped error frame, with no
    chunk of the next attempt and no [DONE]."""
    messages = conversation("a restart after text, over plain HTTP")
    body = {"model": MODEL, "messages": messages, **AFTER_TEXT}
    response, frames = await door_stream(client, body)
    assert response.status_code == 200
    data = [frame.data for frame in frames if frame.data]
    assert "[DONE]" not in data
    chunks = chunks_of(frames)
    *answer, last = chunks
    assert set(last) == {"error"}
    assert last["error"]["code"] == "job_restarted"
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert not any("error" in chunk for chunk in answer)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in answer)
    assert text == "".join(simulated_tokens(messages)[:3])
    assert await attempt(client, response.headers["x-streamq-job-id"]) == 2


async def test_the_sdk_raises_after_the_first_attempts_text(sdk: AsyncOpenAI) -> None:
    """The openai SDK yields the first attempt's text, then raises APIError: never more text."""
    messages = conversation("a restart after text, through the SDK")
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=messages, stream=True, extra_body=AFTER_TEXT
    )
    texts: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="restarted") as raised:
        await read()
    text = "".join(texts)
    assert not isinstance(raised.value, openai.APIStatusError)  # an error frame, not a status
    assert text == "".join(simulated_tokens(messages)[:3])


async def test_a_non_streamed_answer_is_the_last_attempts(
    sdk: AsyncOpenAI, client: httpx2.AsyncClient
) -> None:
    """stream=false after a restart mid-answer: only the second attempt's text."""
    messages = conversation("a restart, not streamed")
    raw = await sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, extra_body=AFTER_TEXT
    )
    assert raw.parse().choices[0].message.content == simulated_text(messages)
    assert await attempt(client, raw.headers["x-streamq-job-id"]) == 2


async def test_replaying_a_restarted_job_streams_its_last_attempt(sdk: AsyncOpenAI) -> None:
    """The same Idempotency-Key after the job ended: the final answer, whole, though the job's
    stream still holds the first attempt's text."""
    messages = conversation("replaying a restarted job")
    key = {"Idempotency-Key": "restarted-turn"}
    first = await sdk.chat.completions.create(
        model=MODEL, messages=messages, extra_body=AFTER_TEXT, extra_headers=key
    )
    assert first.choices[0].message.content == simulated_text(messages)
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=messages, stream=True, extra_body=AFTER_TEXT, extra_headers=key
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == simulated_text(messages)
