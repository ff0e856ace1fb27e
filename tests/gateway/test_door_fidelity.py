"""The door's chunks are shaped as OpenAI's: a role chunk first, one id, created time, model and
system fingerprint across an answer, log probabilities passed through."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from streamq.core.events import Delta, Done, Event, Meta, Reset, Start
from streamq.dev.simulator import SimulatorThread, simulated_text, simulated_tokens
from streamq.gateway.chunks import ChunkWriter
from tests.gateway.sse import chunks_of, door_stream

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Shape me like OpenAI."}]
FINGERPRINT = "fp_streamqsim"  # the simulator's


@pytest.mark.usefixtures("worker")
async def test_chunks_are_shaped_as_openais(client: httpx2.AsyncClient) -> None:
    """n=2: each choice opens with a role-only chunk; id, created, model and fingerprint are
    the same in every chunk."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "n": 2}
    response, frames = await door_stream(client, body)
    assert response.status_code == 200
    assert frames[-1].data == "[DONE]"
    chunks = chunks_of(frames)
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert all("role" not in choice["delta"] for choice in mine[1:])
        text = "".join(choice["delta"].get("content") or "" for choice in mine)
        assert text == simulated_text(MESSAGES, choice=index)
        assert mine[-1]["finish_reason"] == "stop"
    shared = {(c["id"], c["created"], c["model"], c["system_fingerprint"]) for c in chunks}
    assert shared == {(chunks[0]["id"], chunks[0]["created"], "gpt-4o-mini", FINGERPRINT)}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


@pytest.mark.usefixtures("worker")
async def test_a_completion_has_the_upstreams_fingerprint(sdk: AsyncOpenAI) -> None:
    """stream=false: the upstream's system_fingerprint and model name."""
    completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.system_fingerprint == FINGERPRINT
    assert completion.model == "gpt-4o-mini"


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_logprobs_are_the_upstreams(
    sdk: AsyncOpenAI, simulator: SimulatorThread, stream: bool
) -> None:
    """logprobs=true, top_logprobs=2: the door gives the token entries the upstream sent."""
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "logprobs": True,
        "top_logprobs": 2,
    }
    async with AsyncOpenAI(base_url=simulator.base_url, api_key="unused") as upstream:
        expected = await logprobs_of(upstream, request, stream)
    got = await logprobs_of(sdk, request, stream)
    assert got == expected
    assert [entry["token"] for entry in got] == simulated_tokens(MESSAGES)
    assert all(len(entry["top_logprobs"]) == 2 for entry in got)


async def logprobs_of(client: AsyncOpenAI, request: dict[str, Any], stream: bool) -> list[Any]:
    """Every content token entry of the answer, in order."""
    if not stream:
        completion = await client.chat.completions.create(**request)
        logprobs = completion.choices[0].logprobs
        assert logprobs is not None
        assert logprobs.content is not None
        return [entry.model_dump() for entry in logprobs.content]
    entries = []
    async for chunk in await client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            if choice.logprobs is not None and choice.logprobs.content:
                entries += [entry.model_dump() for entry in choice.logprobs.content]
    return entries


def test_the_model_is_the_upstreams_and_constant() -> None:
    """The requested name until the upstream says its own; once a chunk went out, the model
    stays, even if the job's end names another. A reset before any text starts over."""
    writer = ChunkWriter("job-1", include_usage=False, model="requested")
    events: list[Event] = [
        Start(job_id="job-1", model="gpt-4o"),
        Meta(model="first-attempt-model", system_fingerprint="fp_1"),
        Reset(attempt=2),
        Start(job_id="job-1", model="gpt-4o", attempt=2),
        Meta(model="gpt-4o-2024-08-06", system_fingerprint="fp_2", attempt=2),
        Delta(text="Hi", attempt=2),
        Done(finish_reason="stop", model="something-else", system_fingerprint="fp_3", attempt=2),
    ]
    frames = [frame for event in events for frame in writer.frames(event)]
    chunks = [json.loads(frame.removeprefix(b"data: ")) for frame in frames[:-1]]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert {(c["model"], c["system_fingerprint"]) for c in chunks} == {
        ("gpt-4o-2024-08-06", "fp_2")
    }
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {},
    ]


def test_without_a_meta_event_the_requested_model_names_every_chunk() -> None:
    """A worker that writes no meta event (older, or an upstream without one)."""
    writer = ChunkWriter("job-2", include_usage=True, model="requested")
    events: list[Event] = [
        Start(job_id="job-2", model="gpt-4o"),
        Delta(text="Hi"),
        Done(finish_reason="stop", model="gpt-4o-2024-08-06", usage={"total_tokens": 3}),
    ]
    frames = [frame for event in events for frame in writer.frames(event)]
    chunks = [json.loads(frame.removeprefix(b"data: ")) for frame in frames[:-1]]
    assert {c["model"] for c in chunks} == {"gpt-4o"}
    assert chunks[-1]["usage"] == {"total_tokens": 3}
    assert all(c["usage"] is None for c in chunks[:-1])
